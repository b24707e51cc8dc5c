package sqlstore

import (
	"context"
	"fmt"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// PatientResources implements store.Patients: keyset pages by id over
// the current Patient resources that belong to a patient.
func (s *DB) PatientResources(ctx context.Context, p store.PageRequest) (store.Page, error) {
	var w where
	w.add("r.rtype = 'Patient'")
	w.add("r.patient_id IS NOT NULL")
	page, err := s.pageOf(ctx, &w, order{letter: 'i'}, "Patient", p.Cursor, p.Limit(), false)
	if err != nil {
		return store.Page{}, fmt.Errorf("patient resources: %w", err)
	}
	return page, nil
}
