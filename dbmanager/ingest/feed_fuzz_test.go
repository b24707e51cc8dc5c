package ingest

import (
	"errors"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// FuzzFeedBundle decodes a feed's Bundle: whatever it holds, it is refused
// with store.ErrInvalid or read into a transaction or batch of creates and
// updates, each of a grantable type, with its resource and a well-formed
// request.
func FuzzFeedBundle(f *testing.F) {
	f.Add([]byte(fuzzBundle("transaction", fuzzEntry("urn:uuid:9d2b3c1e-0a4f-4b8e-8f0e-3c2a1b0d9e8f", fuzzPatient, "POST", "Patient"),
		fuzzEntry("", fuzzObs, "PUT", "Observation/o1"))))
	f.Add([]byte(fuzzBundle("batch", `{"resource":`+fuzzObs+`,"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=a|b"}}`,
		fuzzEntry("", fuzzObs, "PUT", "Observation?identifier=a|b"))))
	f.Add([]byte(fuzzBundle("collection", fuzzEntry("", fuzzOrg, "PUT", "Organization/org1"))))
	f.Add([]byte(fuzzBundle("transaction", fuzzEntry("", fuzzObs, "DELETE", "Observation/o1"))))
	f.Add([]byte(fuzzBundle("transaction", `{"resource":`+fuzzObs+`}`)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		typ, entries, err := ParseFeedBundle(raw)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if typ != "transaction" && typ != "batch" || len(entries) == 0 || len(entries) > MaxEntries {
			t.Fatalf("accepted a %q of %d entries", typ, len(entries))
		}
		for i, e := range entries {
			switch {
			case len(e.Raw) == 0, store.ValidType(e.Type) != nil:
				t.Fatalf("entry %d: %+v", i, e)
			case e.Method == "POST" && e.ID != "":
				t.Fatalf("entry %d: a create with an id in its URL: %+v", i, e)
			case e.Method == "PUT" && (e.ID == "") == (e.Identifier == ""):
				t.Fatalf("entry %d: an update names its resource by id or by identifier: %+v", i, e)
			case e.Method == "PUT" && e.ID != "" && store.ValidID(e.ID) != nil:
				t.Fatalf("entry %d: id %q", i, e.ID)
			case e.Method != "POST" && e.Method != "PUT":
				t.Fatalf("entry %d: method %q", i, e.Method)
			}
		}
	})
}
