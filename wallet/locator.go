package wallet

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// A device restored from the words knows the wallet's commitment but not
// where it is in the registry's tree, and reading the Enrolled events from
// the deployment on to find it would be the whole tree again (3.2 GB at
// 10^8 patients). So once a wallet knows its leaf it files a locator note
// at a few gateways: the leaf's index sealed under the locator key
// (delegate.LocatorKey, AES-256-GCM, the network as associated data), under
// the locator tag H(D_tag; s, circuits.LocatorScope), with an Ownership
// proof that only an enrolled patient can make (dbmanager's locator.go).
// A restored device computes the tag, asks the active gateways in random
// order, opens the first note that opens, and checks the leaf as it checks
// a remembered one: the path a gateway serves for it must lead from the
// wallet's commitment to a root the chain knows. A missing, stale or forged
// note costs only the look through the events it replaces.
//
// What a gateway learns: that some enrolled patient filed a note, or asked
// for one, from an address. The tag is no provider's tag and the note is
// sealed, so neither names a leaf, a commitment or a relationship; the
// gateway holding a note can link the address that filed it to the one
// that asks for it (the same person's two devices).

// KeepLocator files the wallet's locator note if this device has not yet:
// the patient's app calls it once unlocked, in the background, so that a
// patient enrolled and connected before (whose device files a note only
// with its next Ownership proof otherwise) has one when they need it. In
// bucket mode only; nothing to do before the enrolment.
func (w *Wallet) KeepLocator(ctx context.Context) error {
	if w.buckets == nil {
		return nil
	}
	if w.recallRegistry().Filed {
		return nil
	}
	c, err := w.keys.Commitment()
	if err != nil {
		return err
	}
	i, err := w.buckets.findLeaf(ctx, w, c)
	if err != nil || i < 0 {
		return err
	}
	path, err := w.fetchPath(ctx, c, i)
	if err != nil {
		return err
	}
	return w.buckets.file(ctx, w, path)
}

// locatorCopies is how many gateways, picked at random, keep the note.
const locatorCopies = 3

// locatorAAD binds a note to the network: the chain id and the registry.
func (w *Wallet) locatorAAD() []byte {
	var b [32 + 20]byte
	w.d.ChainID.FillBytes(b[:32])
	copy(b[32:], w.d.PatientRegistry[:])
	return b[:]
}

// locatorAEAD is AES-256-GCM under the locator key.
func (w *Wallet) locatorAEAD() (cipher.AEAD, error) {
	k, err := w.keys.LocatorKey()
	if err != nil {
		return nil, err
	}
	kb := k.Bytes()
	block, err := aes.NewCipher(kb[:])
	if err != nil {
		return nil, fmt.Errorf("wallet: locator key: %w", err)
	}
	return cipher.NewGCM(block)
}

// sealLeaf returns the locator note of leaf i: nonce ‖ sealed index.
func (w *Wallet) sealLeaf(i int) ([]byte, error) {
	aead, err := w.locatorAEAD()
	if err != nil {
		return nil, err
	}
	note := make([]byte, aead.NonceSize(), gatewayapi.LocatorNoteSize)
	if _, err := rand.Read(note); err != nil {
		return nil, err
	}
	var plain [8]byte
	binary.BigEndian.PutUint64(plain[:], uint64(i))
	return aead.Seal(note, note, plain[:], w.locatorAAD()), nil
}

// errBadNote says a note did not open under this wallet's key for this
// network, or names no leaf of the tree.
var errBadNote = errors.New("the locator note does not open for this wallet on this network")

// openNote returns the leaf a locator note seals.
func (w *Wallet) openNote(note []byte) (int, error) {
	aead, err := w.locatorAEAD()
	if err != nil {
		return -1, err
	}
	if len(note) != gatewayapi.LocatorNoteSize {
		return -1, errBadNote
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, note[:n], note[n:], w.locatorAAD())
	if err != nil || len(plain) != 8 {
		return -1, errBadNote
	}
	i := binary.BigEndian.Uint64(plain)
	if i >= merkle.Capacity {
		return -1, errBadNote
	}
	return int(i), nil
}

// locatorTag returns the wallet's locator tag.
func (w *Wallet) locatorTag() (string, error) {
	t, err := w.keys.Tag(circuits.LocatorScope)
	if err != nil {
		return "", err
	}
	return zkhash.Hex(t), nil
}

// fileLocator files the note of the leaf path is of at up to
// locatorCopies active gateways, with an Ownership proof against path's
// root (one the chain knows: the caller checked). It reports whether any
// gateway took it.
func (w *Wallet) fileLocator(ctx context.Context, path merkle.Proof) (bool, error) {
	note, err := w.sealLeaf(int(path.Index))
	if err != nil {
		return false, err
	}
	return w.fileNote(ctx, path, note)
}

// fileNote files note with a proof along path.
func (w *Wallet) fileNote(ctx context.Context, path merkle.Proof, note []byte) (bool, error) {
	s, err := w.keys.Identity()
	if err != nil {
		return false, err
	}
	proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{
		Secret: s.Element(), Path: path, Provider: circuits.LocatorScope,
		Signal: circuits.LocatorSignal(note, w.d.ChainID, w.d.PatientRegistry),
	})
	if err != nil {
		return false, fmt.Errorf("wallet: the locator note's proof: %w", err)
	}
	filing := gatewayapi.LocatorFiling{Tag: zkhash.Hex(pub.Tag), Note: hexutil.Encode(note), Root: zkhash.Hex(pub.Root), Proof: proof.String()}
	provs := w.view.Providers()
	mrand.Shuffle(len(provs), func(a, b int) { provs[a], provs[b] = provs[b], provs[a] })
	filed := 0
	for _, p := range provs {
		if filed == locatorCopies {
			break
		}
		if !p.Active || p.GatewayURL == "" {
			continue
		}
		if w.postJSON(ctx, p, "/registry/locator", filing, nil) == nil {
			filed++
		}
	}
	return filed > 0, nil
}

// findLocator asks the active gateways, in random order, for the wallet's
// locator note, and returns the leaf of the first that opens; -1 if none
// does.
func (w *Wallet) findLocator(ctx context.Context) (int, error) {
	if err := w.view.Sync(ctx); err != nil {
		return -1, err
	}
	tag, err := w.locatorTag()
	if err != nil {
		return -1, err
	}
	provs := w.view.Providers()
	mrand.Shuffle(len(provs), func(a, b int) { provs[a], provs[b] = provs[b], provs[a] })
	for _, p := range provs {
		if !p.Active || p.GatewayURL == "" {
			continue
		}
		var out gatewayapi.LocatorNote
		if w.postJSON(ctx, p, "/registry/locator/find", gatewayapi.LocatorQuery{Tag: tag}, &out) != nil {
			continue // none filed there, or the gateway is down: the next
		}
		note, err := hexutil.Decode(out.Note)
		if err != nil {
			continue
		}
		if i, err := w.openNote(note); err == nil {
			return i, nil
		}
	}
	return -1, nil
}
