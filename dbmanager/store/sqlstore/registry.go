package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/merkle"
)

// RegistryNodes returns the patient registry's tree as this database keeps
// it (tables registry_nodes and registry_size): a merkle.Nodes for the
// gateway's chain view, so that the tree is on disk and the gateway's
// memory does not grow with the nation's patients. The view is its only
// writer.
func (s *DB) RegistryNodes() merkle.Nodes { return registryNodes{s} }

type registryNodes struct{ s *DB }

var _ merkle.Nodes = registryNodes{}

// registryTimeout bounds one call: merkle.Nodes takes no context (the
// chain view calls it while it applies a block).
const registryTimeout = 2 * time.Minute

func (r registryNodes) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), registryTimeout)
}

func (r registryNodes) Count() (int, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	var n int64
	if err := r.s.db.QueryRowContext(ctx, `SELECT leaves FROM registry_size WHERE id = 1`).Scan(&n); err != nil {
		return 0, dbErr("registry size", err)
	}
	return int(n), nil
}

func (r registryNodes) Get(places []merkle.Place) ([]fr.Element, error) {
	if len(places) == 0 {
		return nil, nil
	}
	ctx, cancel := r.ctx()
	defer cancel()
	// One query: a path is 31 nodes.
	var q strings.Builder
	q.WriteString(`SELECT height, idx, value FROM registry_nodes WHERE `)
	args := make([]any, 0, 2*len(places))
	for k, p := range places {
		if k > 0 {
			q.WriteString(" OR ")
		}
		q.WriteString("(height = ? AND idx = ?)")
		args = append(args, p.Height, int64(p.Index))
	}
	rows, err := r.s.db.QueryContext(ctx, r.s.d.q(q.String()), args...)
	if err != nil {
		return nil, dbErr("registry nodes", err)
	}
	defer rows.Close()
	found := make(map[merkle.Place]fr.Element, len(places))
	for rows.Next() {
		var h int
		var i int64
		var v []byte
		if err := rows.Scan(&h, &i, &v); err != nil {
			return nil, dbErr("registry nodes", err)
		}
		e, err := element(v)
		if err != nil {
			return nil, fmt.Errorf("registry node %d at height %d: %w", i, h, err)
		}
		found[merkle.Place{Height: h, Index: int(i)}] = e
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("registry nodes", err)
	}
	out := make([]fr.Element, len(places))
	for k, p := range places {
		e, ok := found[p]
		if !ok {
			return nil, fmt.Errorf("registry node %d at height %d is not stored: %w", p.Index, p.Height, merkle.ErrIndexOutside)
		}
		out[k] = e
	}
	return out, nil
}

func (r registryNodes) Range(h, from, count int) ([]fr.Element, error) {
	if count <= 0 {
		return nil, nil
	}
	ctx, cancel := r.ctx()
	defer cancel()
	rows, err := r.s.db.QueryContext(ctx, r.s.d.q(`SELECT idx, value FROM registry_nodes WHERE height = ? AND idx >= ? AND idx < ? ORDER BY idx`),
		h, int64(from), int64(from)+int64(count))
	if err != nil {
		return nil, dbErr("registry range", err)
	}
	defer rows.Close()
	out := make([]fr.Element, 0, min(count, merkle.BucketSize))
	for rows.Next() {
		var i int64
		var v []byte
		if err := rows.Scan(&i, &v); err != nil {
			return nil, dbErr("registry range", err)
		}
		if i != int64(from+len(out)) {
			return nil, fmt.Errorf("registry node %d at height %d is missing", from+len(out), h)
		}
		e, err := element(v)
		if err != nil {
			return nil, fmt.Errorf("registry node %d at height %d: %w", i, h, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("registry range", err)
	}
	return out, nil
}

func (r registryNodes) Find(leaf fr.Element) (int, error) {
	ctx, cancel := r.ctx()
	defer cancel()
	b := leaf.Bytes()
	var i sql.NullInt64
	if err := r.s.db.QueryRowContext(ctx, r.s.d.q(`SELECT MIN(idx) FROM registry_nodes WHERE height = 0 AND value = ?`), b[:]).Scan(&i); err != nil {
		return -1, dbErr("registry leaf", err)
	}
	if !i.Valid {
		return -1, nil
	}
	return int(i.Int64), nil
}

// setChunk is how many nodes one INSERT writes.
const setChunk = 200

func (r registryNodes) Set(n int, nodes []merkle.Node) error {
	ctx, cancel := r.ctx()
	defer cancel()
	return r.s.write(ctx, func(tx *sql.Tx) error {
		var have int64
		if err := tx.QueryRowContext(ctx, `SELECT leaves FROM registry_size WHERE id = 1`+r.s.d.forUpdate).Scan(&have); err != nil {
			return dbErr("registry size", err)
		}
		if err := merkle.CheckSet(int(have), n, nodes); err != nil {
			return err
		}
		if n < int(have) {
			for h := 0; h <= merkle.Depth; h++ {
				w := (int64(n) + 1<<h - 1) >> h
				if _, err := tx.ExecContext(ctx, r.s.d.q(`DELETE FROM registry_nodes WHERE height = ? AND idx >= ?`), h, w); err != nil {
					return dbErr("registry truncate", err)
				}
			}
		}
		for len(nodes) > 0 {
			chunk := nodes[:min(setChunk, len(nodes))]
			nodes = nodes[len(chunk):]
			var q strings.Builder
			q.WriteString(`INSERT INTO registry_nodes (height, idx, value) VALUES `)
			args := make([]any, 0, 3*len(chunk))
			for k, nd := range chunk {
				if k > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?)")
				b := nd.Value.Bytes()
				args = append(args, nd.Height, int64(nd.Index), b[:])
			}
			q.WriteString(` ON CONFLICT (height, idx) DO UPDATE SET value = excluded.value`)
			if _, err := tx.ExecContext(ctx, r.s.d.q(q.String()), args...); err != nil {
				return dbErr("registry nodes", err)
			}
		}
		if _, err := tx.ExecContext(ctx, r.s.d.q(`UPDATE registry_size SET leaves = ? WHERE id = 1`), int64(n)); err != nil {
			return dbErr("registry size", err)
		}
		return nil
	})
}

// element reads a stored node: 32 bytes, a canonical field element.
func element(b []byte) (fr.Element, error) {
	var e fr.Element
	if len(b) != fr.Bytes {
		return e, fmt.Errorf("%d bytes, not %d", len(b), fr.Bytes)
	}
	if err := e.SetBytesCanonical(b); err != nil {
		return e, errors.New("not a canonical field element")
	}
	return e, nil
}
