// Package delegate owns every key a person holds in MedRec-ZK and how each is
// re-derived from one BIP39 mnemonic (12 words and an optional passphrase).
//
// From the BIP39 seed a BIP32 (secp256k1) root is built, and from it:
//
//	m/44'/60'/0'/0/0            wallet account (the address MetaMask shows)
//	m/19794'/0'/0'              identity secret s
//	m/19794'/1'/p'/e'           delegate account for provider p, rotation e
//	m/19794'/2'/i'              viewer secret v (viewer identity i)
//	m/19794'/3'/p'              grant-secret root at provider p; k per viewer Cv
//	m/19794'/4'/0'              device-store key (DeviceStoreKey; never leaves the device)
//	m/19794'/4'/1'              locator key (LocatorKey; seals the locator note)
//
// 19794 (0x4D52, "MR") is MedRec-ZK's purpose number; every MedRec path is
// hardened, so no public derivation ever links two of them. Delegates of one
// person share nothing visible: each is an unrelated secp256k1 key and each
// address is used at exactly one provider.
//
// Field secrets (s, v, k) are the 32-byte private key at their path expanded
// with HKDF-SHA256 (info "medrec-zk/v1/<use>"; for k, "medrec-zk/v1/grant-secret"
// followed by the viewer commitment Cv) to 64 bytes and reduced modulo r, the
// BN254 scalar-field order, so they are uniform in the field. From them:
// C = zkhash.Commitment(s), tag_p = zkhash.Tag(s, p), Cv =
// zkhash.ViewerCommitment(v). docs/keys.md publishes the paths and the golden
// vectors in testdata/vectors.json.
//
// At rest the mnemonic lives in a keystore file encrypted like go-ethereum's
// keystore (scrypt, AES-128-CTR, Keccak MAC).
package delegate
