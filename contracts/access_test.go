package contracts

import (
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"testing"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestAccessMatrix tries every mutating function as every role, with inputs
// that are otherwise valid, and checks exactly who is let through. The
// deployer has no powers: there is no admin.
func TestAccessMatrix(t *testing.T) {
	e := newEnv(t, 3)
	p1, p2, p3 := e.providers[0], e.providers[1], e.providers[2]
	roles := []struct {
		name string
		k    *ecdsa.PrivateKey
	}{
		{"deployer", e.deployer},
		{"stranger", e.stranger},
		{"authority", p1.authority},
		{"gateway", p1.gateway},
		{"other gateway", p2.gateway},
	}
	seq := 0
	fresh := func() string { seq++; return fmt.Sprintf("matrix-%d", seq) }
	// An open relationship at p1 whose owner signs the grant/revoke calls.
	owned, _ := e.open(e.enrol(p1, fresh()), p1, key("matrix-owner"))
	var nextSeq [4]uint64 // anchors: per provider

	type fn struct {
		name string
		call func(k *ecdsa.PrivateKey) error
		ok   map[string]bool // roles that may call it
		deny string          // the error everyone else gets
	}
	anyone := map[string]bool{"deployer": true, "stranger": true, "authority": true, "gateway": true, "other gateway": true}
	fns := []fn{
		{"enrol", func(k *ecdsa.PrivateKey) error {
			c := zkhash.Commitment(newSecret(fresh()))
			_, err := e.send(k, e.patientsC, e.patients.PackEnrol([]*big.Int{zkhash.Big(c)}))
			if err == nil {
				if _, ierr := e.tree.Insert(c); ierr != nil {
					t.Fatal(ierr)
				}
			}
			return err
		}, map[string]bool{"gateway": true, "other gateway": true}, "NotActiveProvider"},
		{"open", func(k *ecdsa.PrivateKey) error {
			pt := e.enrol(p1, fresh())
			owner := key(fresh())
			proof, pub := e.ownership(pt, p1.id, circuits.ActionOpen, addr(owner), 0)
			_, err := e.send(k, e.relsC, e.rels.PackOpen(zkhash.Big(pub.Tag), p1.id, addr(owner), zkhash.Big(pub.Root), proof[:]))
			return err
		}, map[string]bool{"gateway": true}, "NotProviderGateway"},
		{"rotate", func(k *ecdsa.PrivateKey) error {
			o, _ := e.open(e.enrol(p1, fresh()), p1, key(fresh()))
			next := key(fresh())
			proof, _ := e.ownership(o.pt, p1.id, circuits.ActionRotate, addr(next), 1)
			_, err := e.send(k, e.relsC, e.rels.PackRotate(o.tag, addr(next), e.root(), proof[:]))
			return err
		}, anyone, ""},
		{"grant", func(k *ecdsa.PrivateKey) error {
			g := e.grantRequest(owned, addr(key(fresh())))
			_, err := e.send(k, e.relsC, e.rels.PackGrant(g, e.signGrant(owned.owner, g)))
			return err
		}, anyone, ""},
		{"revoke", func(k *ecdsa.PrivateKey) error {
			g := e.grantRequest(owned, addr(key(fresh())))
			e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(g, e.signGrant(owned.owner, g)))
			r := RevokeRequest{Tag: owned.tag, GranteeKind: 1, Grantee: g.Grantee, Nonce: g.Nonce + 1, Deadline: e.now() + 600}
			_, err := e.send(k, e.relsC, e.rels.PackRevoke(r, e.signRevoke(owned.owner, r)))
			return err
		}, anyone, ""},
		{"anchor", func(k *ecdsa.PrivateKey) error {
			id := e.callProviderOf(k)
			_, err := e.send(k, e.anchorsC, e.anchors.PackAnchor([32]byte{1}, nextSeq[id], 1, [32]byte{2}))
			if err == nil {
				nextSeq[id]++
			}
			return err
		}, map[string]bool{"gateway": true, "other gateway": true}, "NotActiveProvider"},
		{"proposeAdd", func(k *ecdsa.PrivateKey) error {
			_, err := e.send(k, e.agentsC, e.agents.PackProposeAdd(addr(key(fresh())), addr(key(fresh())), "X", ""))
			return err
		}, map[string]bool{"authority": true, "gateway": true, "other gateway": true}, "NotActiveProvider"},
		{"proposeRemove", func(k *ecdsa.PrivateKey) error {
			_, err := e.send(k, e.agentsC, e.agents.PackProposeRemove(2))
			return err
		}, map[string]bool{"authority": true, "gateway": true, "other gateway": true}, "NotActiveProvider"},
		{"vote", func(k *ecdsa.PrivateKey) error {
			// A fresh proposal by provider 3, so every caller votes once.
			e.mustSend(p3.authority, e.agentsC, e.agents.PackProposeAdd(addr(key(fresh())), addr(key(fresh())), "X", ""))
			id := call(t, e.agentsC, e.agents.PackProposalCount(), e.agents.UnpackProposalCount)
			_, err := e.send(k, e.agentsC, e.agents.PackVote(id))
			return err
		}, map[string]bool{"authority": true, "gateway": true, "other gateway": true}, "NotActiveProvider"},
		{"setGateway", func(k *ecdsa.PrivateKey) error {
			_, err := e.send(k, e.agentsC, e.agents.PackSetGateway(addr(p1.gateway), "http://127.0.0.1:1"))
			return err
		}, map[string]bool{"authority": true}, "NotAuthority"},
	}
	for _, f := range fns {
		for _, r := range roles {
			t.Run(f.name+"/"+r.name, func(t *testing.T) {
				err := f.call(r.k)
				if f.ok[r.name] {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				wantRevert(t, err, f.deny)
			})
		}
	}
}

// callProviderOf returns the provider id whose gateway is k, or 0.
func (e *env) callProviderOf(k *ecdsa.PrivateKey) int {
	for _, p := range e.providers {
		if addr(p.gateway) == addr(k) {
			return int(p.id)
		}
	}
	return 0
}
