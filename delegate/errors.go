package delegate

import "errors"

// Errors returned by this package. Match them with errors.Is.
var (
	ErrWordCount       = errors.New("a mnemonic has 12, 15, 18, 21 or 24 words")
	ErrUnknownWord     = errors.New("word is not in the BIP39 English word list")
	ErrChecksum        = errors.New("mnemonic checksum does not match (a word is wrong or out of order)")
	ErrIndexRange      = errors.New("index must be below 2^31")
	ErrKeystoreExists  = errors.New("keystore file already exists")
	ErrWrongPassword   = errors.New("wrong keystore password (or the encrypted data is damaged)")
	ErrCorruptKeystore = errors.New("keystore file is corrupted or not a MedRec-ZK keystore")
	// ErrTestKeystore: the keystore's password protection is the cheap one
	// meant for tests; it must not hold real words.
	ErrTestKeystore = errors.New("this keystore was made for tests, with a password protection too cheap for real words: restore your 12 words into a new keystore")
)
