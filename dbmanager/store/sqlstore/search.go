package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Search. Every current version's searchable values (fhirsearch.Extract)
// are rows of search_values, written by the transaction that makes the
// version current (applier.index) and filled for data stored before by
// reindex when the store opens. A query is one SQL statement per page
// (plus one to count): each criterion is an id IN (values of the patient
// that match) condition, pages are keyset pages over the sort key and id
// (no OFFSET: a write between pages never makes a reader skip a resource).

// index replaces the searchable values of a resource with those of raw,
// its new current version: one statement for up to valuesPerInsert values.
func (a *applier) index(typ, id, owner string, raw []byte, replace bool) error {
	if replace {
		if _, err := a.exec(`DELETE FROM search_values WHERE rtype = ? AND id = ?`, typ, id); err != nil {
			return dbErr("delete search values", err)
		}
	}
	values := fhirsearch.Extract(typ, raw)
	for done := 0; done < len(values); {
		n := min(len(values)-done, valuesPerInsert)
		args := make([]any, 0, n*11)
		for i, v := range values[done : done+n] {
			args = append(args, typ, id, v.Param, done+i, nullable(owner), v.System, v.Value, v.Lo, v.Hi, v.YearLo, v.YearHi)
		}
		if _, err := a.exec(insertValues[n], args...); err != nil {
			return dbErr("insert search values", err)
		}
		done += n
	}
	return nil
}

// valuesPerInsert bounds one statement's values (and so its parameters).
const valuesPerInsert = 32

// insertValues[n] inserts n values.
var insertValues = func() []string {
	out := make([]string, valuesPerInsert+1)
	row := "(" + placeholders(11) + ")"
	for n := 1; n <= valuesPerInsert; n++ {
		out[n] = `INSERT INTO search_values (rtype, id, param, n, patient_id, system, value, lo, hi, year_lo, year_hi) VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
	}
	return out
}()

// reindexBatch is how many resources reindex rewrites per transaction.
const reindexBatch = 500

// reindex fills search_values for every current version when the table
// was filled by an older extraction (fhirsearch.Version), in transactions
// of reindexBatch resources that lock the rows they index, so a write of
// another process waits rather than being overwritten with an older
// version's values. Each batch is idempotent: a reindex cut short is
// finished at the next open.
func (s *DB) reindex(ctx context.Context) error {
	var version int
	if err := s.db.QueryRowContext(ctx, `SELECT version FROM search_index WHERE id = 1`).Scan(&version); err != nil {
		return dbErr("read search index version", err)
	}
	if version >= fhirsearch.Version {
		return nil
	}
	lock := ""
	if s.d == postgresDialect {
		lock = " FOR UPDATE OF r"
	}
	var lastType, lastID string
	for {
		n := 0
		err := s.write(ctx, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, s.d.q(`SELECT r.rtype, r.id, r.patient_id, v.raw FROM resources r
JOIN resource_versions v ON v.rtype = r.rtype AND v.id = r.id AND v.version = r.version
WHERE (r.rtype, r.id) > (?, ?) ORDER BY r.rtype, r.id LIMIT ?`+lock), lastType, lastID, reindexBatch)
			if err != nil {
				return dbErr("read resources to index", err)
			}
			type res struct {
				typ, id string
				owner   sql.NullString
				raw     []byte
			}
			var batch []res
			for rows.Next() {
				var r res
				if err := rows.Scan(&r.typ, &r.id, &r.owner, &r.raw); err != nil {
					rows.Close()
					return dbErr("scan resource to index", err)
				}
				batch = append(batch, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return dbErr("read resources to index", err)
			}
			a := applier{s: s, tx: tx, ctx: ctx}
			for _, r := range batch {
				if err := a.index(r.typ, r.id, r.owner.String, r.raw, true); err != nil {
					return fmt.Errorf("index %s/%s: %w", r.typ, r.id, err)
				}
			}
			n = len(batch)
			if n > 0 {
				lastType, lastID = batch[n-1].typ, batch[n-1].id
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("sqlstore: search index: %w", err)
		}
		if n < reindexBatch {
			break
		}
	}
	if _, err := s.db.ExecContext(ctx, s.d.q(`UPDATE search_index SET version = ? WHERE id = 1 AND version < ?`), fhirsearch.Version, fhirsearch.Version); err != nil {
		return fmt.Errorf("sqlstore: search index: %w", dbErr("update version", err))
	}
	return nil
}

// Cursors name the item a page starts after (or, for a page before, ends
// before) and the order they belong to:
//
//	base64url( direction ‖ order ‖ 0 ‖ type ‖ 0 ‖ id [‖ 0 ‖ sort key] )
//
// direction 'a' (after) or 'b' (before); order 'i' (search by id), 'e'
// ($everything: type, id), 'd'/'D' (date ascending/descending), 'u'/'U'
// (lastUpdated). The sort key is the page's edge item's, in decimal.
type cursor struct {
	before bool
	order  byte
	typ    string
	id     string
	key    int64
}

func (c cursor) String() string {
	dir := byte('a')
	if c.before {
		dir = 'b'
	}
	s := string([]byte{dir, c.order}) + "\x00" + c.typ + "\x00" + c.id
	if c.keyed() {
		s += "\x00" + strconv.FormatInt(c.key, 10)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

func (c cursor) keyed() bool { return strings.IndexByte("dDuU", c.order) >= 0 }

func parseCursor(s string, order byte) (cursor, error) {
	bad := fmt.Errorf("cursor %q: %w", s, store.ErrInvalid)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2 || (b[0] != 'a' && b[0] != 'b') || b[1] != order {
		return cursor{}, bad
	}
	c := cursor{before: b[0] == 'b', order: order}
	parts := strings.Split(string(b[2:]), "\x00")
	want := 3
	if c.keyed() {
		want = 4
	}
	if len(parts) != want || parts[0] != "" || store.ValidType(parts[1]) != nil || store.ValidID(parts[2]) != nil {
		return cursor{}, bad
	}
	c.typ, c.id = parts[1], parts[2]
	if c.keyed() {
		if c.key, err = strconv.ParseInt(parts[3], 10, 64); err != nil {
			return cursor{}, bad
		}
	}
	return c, nil
}

// where collects a query's conditions and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) String() string { return strings.Join(w.conds, " AND ") }

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// ownedBy is the condition on a resource's patient ("": shared).
func ownedBy(col, patientID string) (string, []any) {
	if patientID == "" {
		return col + " IS NULL", nil
	}
	return col + " = ?", []any{patientID}
}

// criterion adds the condition of one criterion on resources r.
func (w *where) criterion(c store.Criterion, patientID, typ string) error {
	if len(c.Any) == 0 || len(c.Any) > store.MaxMatches {
		return fmt.Errorf("criterion %s with %d values: %w", c.Param, len(c.Any), store.ErrInvalid)
	}
	switch c.Param {
	case store.IDParam:
		var ids []any
		for _, m := range c.Any {
			ids = append(ids, m.Value)
		}
		w.add("r.id IN ("+placeholders(len(ids))+")", ids...)
		return nil
	case store.UpdatedParam:
		var ors []string
		var args []any
		for _, m := range c.Any {
			if m.ByYear {
				return fmt.Errorf("_lastUpdated by year: %w", store.ErrInvalid)
			}
			cond, a := dateCond("r.last_updated_us", "r.last_updated_us", m.Prefix, m.Lo, m.Hi)
			ors, args = append(ors, cond), append(args, a...)
		}
		w.add("("+strings.Join(ors, " OR ")+")", args...)
		return nil
	}
	owner, args := ownedBy("s.patient_id", patientID)
	args = append(args, typ, c.Param)
	var ors []string
	for _, m := range c.Any {
		switch c.Kind {
		case store.Token:
			switch {
			case m.AnySystem:
				ors, args = append(ors, "s.value = ?"), append(args, m.Value)
			case m.AnyValue:
				ors, args = append(ors, "s.system = ?"), append(args, m.System)
			default:
				ors, args = append(ors, "(s.system = ? AND s.value = ?)"), append(args, m.System, m.Value)
			}
		case store.Reference:
			if m.System == "" {
				ors, args = append(ors, "s.value = ?"), append(args, m.Value)
			} else {
				ors, args = append(ors, "(s.value = ? AND s.system IN (?, ''))"), append(args, m.Value, m.System)
			}
		case store.Date:
			var cond string
			var a []any
			if m.ByYear {
				cond, a = dateCond("s.year_lo", "s.year_hi", m.Prefix, int64(m.Year), int64(m.Year))
			} else {
				cond, a = dateCond("s.lo", "s.hi", m.Prefix, m.Lo, m.Hi)
			}
			ors, args = append(ors, cond), append(args, a...)
		default:
			return fmt.Errorf("criterion %s of kind %v: %w", c.Param, c.Kind, store.ErrInvalid)
		}
	}
	// Dates are the values without a code or id: each kind has its own
	// (partial) index, which the condition on value selects.
	kind := " AND s.value <> ''"
	if c.Kind == store.Date {
		kind = " AND s.value = ''"
	}
	w.add("r.id IN (SELECT s.id FROM search_values s WHERE "+owner+" AND s.rtype = ? AND s.param = ?"+kind+" AND ("+strings.Join(ors, " OR ")+"))", args...)
	return nil
}

// dateCond is how a target range [lo, hi] (columns) relates to a search
// value's [pLo, pHi] under a prefix (FHIR R4 3.1.1.4.2).
func dateCond(lo, hi string, p store.Prefix, pLo, pHi int64) (string, []any) {
	within := "(" + lo + " >= ? AND " + hi + " <= ?)"
	switch p {
	case store.Gt:
		return hi + " > ?", []any{pHi}
	case store.Lt:
		return lo + " < ?", []any{pLo}
	case store.Ge:
		return "(" + hi + " > ? OR " + within + ")", []any{pHi, pLo, pHi}
	case store.Le:
		return "(" + lo + " < ? OR " + within + ")", []any{pLo, pLo, pHi}
	}
	return within, []any{pLo, pHi}
}

// order is how a query's pages are cut: the key each row sorts by (SQL
// over r, or "" for none: then by type and id, or by id alone), its
// arguments, and the cursor's order letter.
type order struct {
	key     string
	join    string // what key needs besides r
	keyArgs []any  // of join and key
	letter  byte
	byType  bool // $everything: type, then id
}

func searchOrder(q store.Query, patientID string) (order, error) {
	switch q.Sort.Key {
	case store.SortID:
		if q.Sort.Desc {
			return order{}, fmt.Errorf("descending by id: %w", store.ErrInvalid)
		}
		return order{letter: 'i'}, nil
	case store.SortUpdated:
		if q.Sort.Desc {
			return order{key: "-r.last_updated_us", letter: 'U'}, nil
		}
		return order{key: "r.last_updated_us", letter: 'u'}, nil
	case store.SortDate:
		if q.Sort.Param == "" {
			return order{}, fmt.Errorf("sort by date without a parameter: %w", store.ErrInvalid)
		}
		// Resources without the date come last either way.
		if q.Sort.Desc {
			return order{key: "COALESCE((SELECT -MAX(s.hi) FROM search_values s WHERE s.rtype = r.rtype AND s.id = r.id AND s.param = ?), 9223372036854775807)",
				keyArgs: []any{q.Sort.Param}, letter: 'D'}, nil
		}
		return order{key: "COALESCE((SELECT MIN(s.lo) FROM search_values s WHERE s.rtype = r.rtype AND s.id = r.id AND s.param = ?), 9223372036854775807)",
			keyArgs: []any{q.Sort.Param}, letter: 'd'}, nil
	}
	return order{}, fmt.Errorf("sort %d: %w", q.Sort.Key, store.ErrInvalid)
}

const resourceCols = `r.rtype, r.id, r.version, r.patient_id, r.last_updated_us, r.sha256, r.seq, v.raw`

// page runs one page of a query over resources r matching w, in order o,
// from cursor (zero: the first page), and counts them all.
func (s *DB) pageOf(ctx context.Context, w *where, o order, typ, cur string, limit int, countOnly bool) (store.Page, error) {
	var page store.Page
	var c *cursor
	if cur != "" {
		pc, err := parseCursor(cur, o.letter)
		if err != nil {
			return page, err
		}
		if !o.byType && pc.typ != typ {
			return page, fmt.Errorf("cursor of a search of %s: %w", pc.typ, store.ErrInvalid)
		}
		c = &pc
	}
	err := s.read(ctx, func(tx *sql.Tx) error {
		count := func() error {
			err := tx.QueryRowContext(ctx, s.d.q(`SELECT COUNT(*) FROM resources r WHERE `+w.String()), w.args...).Scan(&page.Total)
			return dbErr("count", err)
		}
		if countOnly {
			return count()
		}
		// The page's keys first — (sort key,) type, id: the type is
		// constant in a search and keeps the key unique in $everything —
		// and the number of all matches, counted in the same pass; then
		// the page's rows: only the page's JSON is read.
		keyCols := []string{"rtype", "id"}
		matches := "SELECT r.rtype, r.id, COUNT(*) OVER () AS total"
		args := slices.Clone(o.keyArgs)
		if o.key != "" {
			keyCols = append([]string{"sk"}, keyCols...)
			matches += ", " + o.key + " AS sk"
		} else {
			matches += ", 0 AS sk"
		}
		matches += " FROM resources r" + o.join + " WHERE " + w.String()
		args = append(args, w.args...)
		pageKeys := "SELECT rtype, id, sk, total FROM (" + matches + ") m"
		dir, cmp := "", ">"
		if c != nil && c.before {
			dir, cmp = " DESC", "<"
		}
		if c != nil {
			vals := []any{c.typ, c.id}
			if o.key != "" {
				vals = append([]any{c.key}, vals...)
			}
			pageKeys += " WHERE (" + strings.Join(keyCols, ", ") + ") " + cmp + " (" + placeholders(len(vals)) + ")"
			args = append(args, vals...)
		}
		var ord, kord []string
		for _, k := range keyCols {
			ord, kord = append(ord, k+dir), append(kord, "k."+k+dir)
		}
		pageKeys += " ORDER BY " + strings.Join(ord, ", ") + " LIMIT ?"
		args = append(args, limit+1)
		query := "SELECT " + resourceCols + ", k.sk, k.total FROM (" + pageKeys + ") k JOIN resources r ON r.rtype = k.rtype AND r.id = k.id" +
			" JOIN resource_versions v ON v.rtype = r.rtype AND v.id = r.id AND v.version = r.version ORDER BY " + strings.Join(kord, ", ")
		rows, err := tx.QueryContext(ctx, s.d.q(query), args...)
		if err != nil {
			return dbErr("search", err)
		}
		defer rows.Close()
		var keys []int64
		for rows.Next() {
			var key int64
			r, err := scanResourceKey(rows, &key, &page.Total)
			if err != nil {
				return err
			}
			page.Resources = append(page.Resources, r)
			keys = append(keys, key)
		}
		if err := rows.Err(); err != nil {
			return dbErr("search", err)
		}
		if len(page.Resources) == 0 && c != nil {
			// Nothing left on this side of the cursor: count apart.
			if err := count(); err != nil {
				return err
			}
		}
		more := len(page.Resources) > limit
		if more {
			page.Resources, keys = page.Resources[:limit], keys[:limit]
		}
		if c != nil && c.before {
			slices.Reverse(page.Resources)
			slices.Reverse(keys)
		}
		edge := func(i int, before bool) string {
			r := page.Resources[i]
			return cursor{before: before, order: o.letter, typ: r.Type, id: r.ID, key: keys[i]}.String()
		}
		n := len(page.Resources)
		switch {
		case n == 0:
		case c != nil && c.before:
			page.Next = edge(n-1, false)
			if more {
				page.Prev = edge(0, true)
			}
		default:
			if more {
				page.Next = edge(n-1, false)
			}
			if c != nil {
				page.Prev = edge(0, true)
			}
		}
		return nil
	})
	return page, err
}

// scanResourceKey scans resourceCols, a sort key and a count.
func scanResourceKey(rows *sql.Rows, key *int64, total *int) (store.Resource, error) {
	var (
		r       store.Resource
		patient sql.NullString
		updated int64
		sha     []byte
		seq     int64
	)
	if err := rows.Scan(&r.Type, &r.ID, &r.Version, &patient, &updated, &sha, &seq, &r.Raw, key, total); err != nil {
		return r, dbErr("scan resource", err)
	}
	r.PatientID, r.LastUpdated, r.Seq = patient.String, fromMicros(updated), uint64(seq)
	var err error
	r.SHA256, err = hash32(sha)
	return r, err
}

// Search implements store.Records.
func (s *DB) Search(ctx context.Context, patientID string, q store.Query) (store.Page, error) {
	page, err := s.search(ctx, patientID, q)
	if err != nil {
		return store.Page{}, fmt.Errorf("search %s of patient %q: %w", q.Type, patientID, err)
	}
	return page, nil
}

func (s *DB) search(ctx context.Context, patientID string, q store.Query) (store.Page, error) {
	if err := store.ValidType(q.Type); err != nil {
		return store.Page{}, err
	}
	o, err := searchOrder(q, patientID)
	if err != nil {
		return store.Page{}, err
	}
	var w where
	owner, args := ownedBy("r.patient_id", patientID)
	w.add(owner, args...)
	w.add("r.rtype = ?", q.Type)
	for _, c := range q.Criteria {
		if err := w.criterion(c, patientID, q.Type); err != nil {
			return store.Page{}, err
		}
	}
	page, err := s.pageOf(ctx, &w, o, q.Type, q.Cursor, q.Limit(), q.CountOnly)
	if err == nil && page.Total == 0 && patientID != "" {
		_, err = s.Patient(ctx, patientID)
	}
	return page, err
}

// Everything implements store.Records.
func (s *DB) Everything(ctx context.Context, patientID string, q store.EverythingQuery) (store.Page, error) {
	var w where
	w.add("r.patient_id = ?", patientID)
	if q.Types != nil {
		if len(q.Types) == 0 {
			w.add("1 = 0")
		} else {
			var ts []any
			for _, t := range q.Types {
				if err := store.ValidType(t); err != nil {
					return store.Page{}, fmt.Errorf("everything: %w", err)
				}
				ts = append(ts, t)
			}
			w.add("r.rtype IN ("+placeholders(len(ts))+")", ts...)
		}
	}
	if !q.Since.IsZero() {
		w.add("r.last_updated_us >= ?", micros(q.Since))
	}
	page, err := s.pageOf(ctx, &w, order{letter: 'e', byType: true}, "", q.Cursor, q.Limit(), q.CountOnly)
	if err == nil && page.Total == 0 {
		_, err = s.Patient(ctx, patientID)
	}
	if err != nil {
		return store.Page{}, fmt.Errorf("everything of patient %q: %w", patientID, err)
	}
	return page, nil
}

// Versions implements store.Records.
func (s *DB) Versions(ctx context.Context, typ, id string, before int64, limit int) ([]store.Resource, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT rtype, id, version, patient_id, last_updated_us, sha256, seq, raw
FROM resource_versions WHERE rtype = ? AND id = ? AND version < ? ORDER BY version DESC LIMIT ?`), typ, id, before, store.PageRequest{Count: limit}.Limit())
	if err != nil {
		return nil, fmt.Errorf("versions of %s/%s: %w", typ, id, dbErr("query", err))
	}
	defer rows.Close()
	var out []store.Resource
	for rows.Next() {
		r, err := scanResource(rows)
		if err != nil {
			return nil, fmt.Errorf("versions of %s/%s: %w", typ, id, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("versions of %s/%s: %w", typ, id, dbErr("query", err))
	}
	if len(out) == 0 {
		if _, err := s.Get(ctx, typ, id); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// IDs implements store.Records.
func (s *DB) IDs(ctx context.Context, patientID, typ string) ([]string, error) {
	owner, args := ownedBy("patient_id", patientID)
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT id FROM resources WHERE `+owner+` AND rtype = ? ORDER BY id`), append(args, typ)...)
	if err != nil {
		return nil, fmt.Errorf("ids of %s: %w", typ, dbErr("query", err))
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("ids of %s: %w", typ, dbErr("scan", err))
		}
		out = append(out, id)
	}
	return out, dbErr("ids", rows.Err())
}

// Included implements store.Records.
func (s *DB) Included(ctx context.Context, patientID string, inc store.Include, ids []string) ([]store.Resource, error) {
	if len(ids) == 0 || len(inc.Target) == 0 {
		return nil, nil
	}
	if len(ids) > store.MaxCount {
		return nil, fmt.Errorf("include from %d resources: %w", len(ids), store.ErrInvalid)
	}
	args := []any{inc.Source, inc.Param}
	for _, id := range ids {
		args = append(args, id)
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT DISTINCT system, value FROM search_values WHERE rtype = ? AND param = ? AND id IN (`+placeholders(len(ids))+`)`), args...)
	if err != nil {
		return nil, fmt.Errorf("include %s:%s: %w", inc.Source, inc.Param, dbErr("query", err))
	}
	typed := map[store.Ref]bool{}
	untyped := map[string]bool{}
	var targetIDs []any
	for rows.Next() {
		var sys, val string
		if err := rows.Scan(&sys, &val); err != nil {
			rows.Close()
			return nil, fmt.Errorf("include %s:%s: %w", inc.Source, inc.Param, dbErr("scan", err))
		}
		switch {
		case sys == "":
			untyped[val] = true
		case slices.Contains(inc.Target, sys):
			typed[store.Ref{Type: sys, ID: val}] = true
		default:
			continue
		}
		targetIDs = append(targetIDs, val)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("include %s:%s: %w", inc.Source, inc.Param, dbErr("query", err))
	}
	if len(targetIDs) == 0 {
		return nil, nil
	}
	owner, oargs := ownedBy("r.patient_id", patientID)
	if patientID != "" {
		owner = "(" + owner + " OR r.patient_id IS NULL)"
	}
	var qargs []any
	for _, t := range inc.Target {
		qargs = append(qargs, t)
	}
	qargs = append(qargs, targetIDs...)
	qargs = append(append(qargs, oargs...), store.MaxIncluded*2)
	res, err := s.resources(ctx, `SELECT `+resourceCols+` FROM resources r JOIN resource_versions v ON v.rtype = r.rtype AND v.id = r.id AND v.version = r.version
WHERE r.rtype IN (`+placeholders(len(inc.Target))+`) AND r.id IN (`+placeholders(len(targetIDs))+`) AND `+owner+` ORDER BY r.rtype, r.id LIMIT ?`, qargs...)
	if err != nil {
		return nil, fmt.Errorf("include %s:%s: %w", inc.Source, inc.Param, err)
	}
	out := res[:0]
	for _, r := range res {
		if (typed[store.Ref{Type: r.Type, ID: r.ID}] || untyped[r.ID]) && len(out) < store.MaxIncluded {
			out = append(out, r)
		}
	}
	return out, nil
}

// RevIncluded implements store.Records.
func (s *DB) RevIncluded(ctx context.Context, patientID string, inc store.Include, targets []store.Ref) ([]store.Resource, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	if len(targets) > store.MaxCount {
		return nil, fmt.Errorf("revinclude to %d resources: %w", len(targets), store.ErrInvalid)
	}
	var ids, types []any
	for _, t := range targets {
		ids = append(ids, t.ID)
		if !slices.Contains(types, any(t.Type)) {
			types = append(types, t.Type)
		}
	}
	owner, oargs := ownedBy("r.patient_id", patientID)
	sowner, sargs := ownedBy("s.patient_id", patientID)
	args := append(oargs, inc.Source)
	args = append(append(args, sargs...), inc.Source, inc.Param)
	args = append(append(args, ids...), types...)
	args = append(args, store.MaxIncluded)
	res, err := s.resources(ctx, `SELECT `+resourceCols+` FROM resources r JOIN resource_versions v ON v.rtype = r.rtype AND v.id = r.id AND v.version = r.version
WHERE `+owner+` AND r.rtype = ? AND r.id IN (SELECT s.id FROM search_values s WHERE `+sowner+` AND s.rtype = ? AND s.param = ?
  AND s.value <> '' AND s.value IN (`+placeholders(len(ids))+`) AND (s.system = '' OR s.system IN (`+placeholders(len(types))+`)))
ORDER BY r.id LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("revinclude %s:%s: %w", inc.Source, inc.Param, err)
	}
	return res, nil
}

// resources runs a query of resourceCols.
func (s *DB) resources(ctx context.Context, query string, args ...any) ([]store.Resource, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, dbErr("query", err)
	}
	defer rows.Close()
	var out []store.Resource
	for rows.Next() {
		r, err := scanResource(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("query", err)
	}
	return out, nil
}
