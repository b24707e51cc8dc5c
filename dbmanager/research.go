package dbmanager

import (
	"regexp"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// What a reader may search by. Every reader searches its own patient's
// records only: patient= and subject= name that patient or match nothing,
// whatever else they name. A research reader sees resources de-identified
// (deidentify.go): dates cut to the year as written, ids replaced by its
// pseudonyms. A search must not give back what that removed — a date
// bisected to the day with ge and lt, an order within a year, the provider's
// ids confirmed by matching them — so a research reader may search by:
//
//   - codes, categories and statuses (token parameters marked Research in
//     package fhirsearch: elements de-identification keeps as they are);
//   - dates by year only (date=2020, ge2019), compared with the years as
//     written — exactly what its copies show — never with instants;
//   - patient and subject by its pseudonym of the patient, _id by its
//     pseudonyms of the resources;
//   - references only to follow them (_include, _revinclude), where
//     de-identification keeps them;
//
// and never by _lastUpdated (or $everything's _since: instants of the
// provider's writes), nor sort by a date or _lastUpdated. Anything else is
// refused with a 400 that says why, and the refusal is logged. A read by id
// takes a research reader's pseudonym too; a provider id reads as unknown.

// researchLimit is a refusal of what a research reader may not ask.
func researchLimit(format string, args ...any) *apiError {
	e := badRequest(format, args...)
	e.msg = "research reader: " + e.msg + " (see /fhir/metadata and docs/fhir.md)"
	return e
}

// pseudonymRE is the shape of a research reader's pseudonyms (pseudonyms:
// a UUID of version 8 and the RFC 9562 variant).
var pseudonymRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// pseudonymOf returns how r sees ids: its pseudonyms, or the ids themselves.
func (g *Gateway) pseudonymOf(r *reader) func(string) string {
	if r.purpose != access.Research {
		return func(id string) string { return id }
	}
	return g.pseudonyms(r)
}

// realID returns the provider's id of a resource r names by id: for a
// research reader, the resource of r's patient (or the shared one) whose
// pseudonym it is; store.ErrNotFound if none is.
func (g *Gateway) realID(c *fiber.Ctx, r *reader, typ, id string) (string, error) {
	if r.purpose != access.Research {
		return id, nil
	}
	if !pseudonymRE.MatchString(id) {
		return "", store.ErrNotFound
	}
	real, err := g.fromPseudonyms(c, r, typ, []string{id})
	if err != nil {
		return "", err
	}
	if len(real) == 0 {
		return "", store.ErrNotFound
	}
	return real[0], nil
}

// fromPseudonyms returns the ids, among r's patient's resources of typ (or
// the shared ones), whose pseudonyms are among ps. Pseudonyms are keyed
// hashes: they are recomputed for every candidate, never inverted.
func (g *Gateway) fromPseudonyms(c *fiber.Ctx, r *reader, typ string, ps []string) ([]string, error) {
	owner := r.patient
	if !fhirval.InPatientCompartment(typ) {
		owner = ""
	}
	ids, err := g.cfg.Store.IDs(c.UserContext(), owner, typ)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, p := range ps {
		want[p] = true
	}
	pseudonym := g.pseudonyms(r)
	var out []string
	for _, id := range ids {
		if want[pseudonym(id)] {
			out = append(out, id)
		}
	}
	return out, nil
}

// searchQuery turns a search's parameters into r's query of the store.
// nothing reports a search that can match nothing (a patient= that names
// someone else), answered without asking the store.
func (g *Gateway) searchQuery(c *fiber.Ctx, r *reader, req *fhirsearch.Request) (q store.Query, nothing bool, err error) {
	research := r.purpose == access.Research
	q = store.Query{Type: req.Type, Sort: req.Sort, CountOnly: req.Summary || req.Count == 0}
	q.Count = max(req.Count, 0)
	if research && req.Sort.Key != store.SortID {
		return q, false, researchLimit("_sort by a date or _lastUpdated would show the order within a year; research readers get results in id order")
	}
	if q.Cursor, err = g.openCursor(r, req.Cursor); err != nil {
		return q, false, err
	}
	for _, cr := range req.Criteria {
		sc := store.Criterion{Param: cr.Param.Index(), Kind: cr.Param.Kind}
		switch {
		case cr.Param.Name == store.IDParam:
			ids := make([]string, 0, len(cr.Values))
			for _, v := range cr.Values {
				ids = append(ids, v.Match.Value)
			}
			if research {
				for _, id := range ids {
					if !pseudonymRE.MatchString(id) {
						return q, false, researchLimit("_id takes your pseudonyms of the resources (as fullUrl shows them), not %q", id)
					}
				}
				if ids, err = g.fromPseudonyms(c, r, req.Type, ids); err != nil {
					return q, false, storeError(err)
				}
			}
			for _, id := range ids {
				sc.Any = append(sc.Any, store.Match{Value: id})
			}
		case cr.Param.Name == store.UpdatedParam:
			if research {
				return q, false, researchLimit("_lastUpdated is an instant of the provider's write: research readers see dates to the year only")
			}
			for _, v := range cr.Values {
				sc.Any = append(sc.Any, v.Match)
			}
		case cr.Param.Kind == store.Reference && fhirsearch.IsPatientParam(cr.Param.Name):
			// Only the reader's patient: the given id (a pseudonym for a
			// research reader) as the reference's id; anything else
			// matches nothing and is never compared with stored ids.
			self := g.pseudonymOf(r)(r.patient)
			for _, v := range cr.Values {
				if research && !pseudonymRE.MatchString(v.Match.Value) {
					return q, false, researchLimit("%s takes your pseudonym of the patient (as fullUrl shows it), not %q", cr.Param.Name, v.Match.Value)
				}
				if v.Match.Value == self && (v.Match.System == "" || v.Match.System == "Patient") {
					sc.Any = append(sc.Any, store.Match{System: "Patient", Value: r.patient})
				}
			}
		case cr.Param.Kind == store.Reference:
			if research {
				return q, false, researchLimit("%s: research readers search references by patient only (and follow them with _include)", cr.Param.Name)
			}
			for _, v := range cr.Values {
				sc.Any = append(sc.Any, v.Match)
			}
		case cr.Param.Kind == store.Date:
			for _, v := range cr.Values {
				m := v.Match
				if research {
					if !cr.Param.Research || v.Precision != fhirsearch.Year {
						return q, false, researchLimit("%s: research readers search dates by year only (%s=2020, ge2019, lt2021)", cr.Param.Name, cr.Param.Name)
					}
					m = store.Match{Prefix: m.Prefix, ByYear: true, Year: m.Year}
				}
				sc.Any = append(sc.Any, m)
			}
		default: // tokens
			if research && !cr.Param.Research {
				return q, false, researchLimit("%s is not a parameter research readers may search by", cr.Param.Name)
			}
			for _, v := range cr.Values {
				sc.Any = append(sc.Any, v.Match)
			}
		}
		if len(sc.Any) == 0 {
			return q, true, nil
		}
		q.Criteria = append(q.Criteria, sc)
	}
	return q, false, nil
}
