package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// GethVersion is the go-ethereum release we run as the node: the last one
// that seals Clique blocks. Our own code talks to it only over JSON-RPC.
const GethVersion = "1.13.15"

// GethEnv names the environment variable that points at the geth binary.
const GethEnv = "MEDREC_GETH"

// Geth is a checked geth binary.
type Geth struct {
	Path    string // absolute path
	Version string // as reported by `geth version`, e.g. "1.13.15-stable"
}

var versionLine = regexp.MustCompile(`(?m)^Version:\s*(\S+)`)

// FindGeth locates geth — path if given, else $MEDREC_GETH, else geth on
// $PATH — and checks that it is release GethVersion.
func FindGeth(ctx context.Context, path string) (*Geth, error) {
	if path == "" {
		path = os.Getenv(GethEnv)
	}
	hint := fmt.Sprintf("build it with `make bin/geth` and pass --geth or set %s", GethEnv)
	if path == "" {
		p, err := exec.LookPath("geth")
		if err != nil {
			return nil, fmt.Errorf("%w: not on $PATH and %s unset (%s)", ErrGethMissing, GethEnv, hint)
		}
		path = p
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist (%s)", ErrGethMissing, path, hint)
		}
		return nil, fmt.Errorf("%w: %v", ErrGethMissing, err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("%w: %s is not an executable file (%s)", ErrGethMissing, path, hint)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "version").Output()
	if err != nil {
		return nil, fmt.Errorf("%w: `%s version` failed: %v", ErrGethVersion, path, err)
	}
	m := versionLine.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("%w: `%s version` printed no version; need %s (%s)", ErrGethVersion, path, GethVersion, hint)
	}
	v := string(m[1])
	if v != GethVersion && !strings.HasPrefix(v, GethVersion+"-") {
		return nil, fmt.Errorf("%w: %s is geth %s; MedRec needs %s, the last release that seals Clique (%s)", ErrGethVersion, path, v, GethVersion, hint)
	}
	return &Geth{Path: path, Version: v}, nil
}
