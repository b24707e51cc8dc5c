// Package syntheatest finds the Synthea sample bundles for dbmanager's tests:
// $MEDREC_SYNTHEA_DIR if set, else ../shared/data/synthea next to the
// repository root (the layout of the project's machines). Tests skip when the
// folder is absent; the bundles are never copied into the repository.
package syntheatest

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Dir returns the folder of Synthea bundles, skipping the test if there is none.
func Dir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("MEDREC_SYNTHEA_DIR")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			tb.Skipf("Synthea bundles: %v", err)
		}
		dir = filepath.Join(root, "..", "shared", "data", "synthea")
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		tb.Skipf("Synthea bundles not found in %s (set MEDREC_SYNTHEA_DIR)", dir)
	}
	return dir
}

// Bundles returns the paths of every bundle, patients first, then the
// hospital and practitioner files.
func Bundles(tb testing.TB) (patients, directory []string) {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(Dir(tb), "*.json"))
	if err != nil || len(files) == 0 {
		tb.Skipf("no Synthea bundles: %v", err)
	}
	sort.Strings(files)
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasPrefix(base, "hospitalInformation") || strings.HasPrefix(base, "practitionerInformation") {
			directory = append(directory, f)
		} else {
			patients = append(patients, f)
		}
	}
	return patients, directory
}

// Read returns a file's bytes, failing the test on error.
func Read(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
