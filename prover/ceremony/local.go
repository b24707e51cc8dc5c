package ceremony

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/medrec-zk/medrec/prover"
)

// Local is a ceremony run start to finish by one process: every contributor
// runs on one machine, so whoever runs it could forge proofs. It is for the
// dev keys and for local networks (`medrec run`), never for production.
type Local struct {
	// Contributors contribute to each phase in this order.
	Contributors []string
	// Extra are optional circuits to make keys for too (Init).
	Extra []prover.Circuit
	// Beacon1 and Beacon2 close phase 1 and phase 2 (hex, at least 16
	// bytes). An empty one is drawn from crypto/rand when its phase closes,
	// after the last contribution, and recorded in the transcript like any
	// beacon.
	Beacon1, Beacon2 string
	// Origin is recorded in the keys' manifest.
	Origin string
	// Progress, when set, is told each step just before it starts, e.g.
	// "phase 1, provider-1 contributes".
	Progress func(step string)
}

// RunLocal runs every step of the ceremony described by l in dir, which
// must not hold one yet, and finalizes it into keyDir. ctx is checked between
// steps (a step itself runs to its end): a cancelled ceremony stops with
// ctx's error before writing any key, leaving an unfinished transcript.
func RunLocal(ctx context.Context, dir, keyDir string, l Local) (*prover.Manifest, error) {
	if len(l.Contributors) == 0 {
		return nil, errors.New("ceremony: a local ceremony needs at least one contributor")
	}
	if l.Origin == "" {
		return nil, errors.New("ceremony: a local ceremony's keys need an origin")
	}
	for _, n := range l.Contributors {
		if !nameRE.MatchString(n) {
			return nil, fmt.Errorf("%w: %q", ErrName, n)
		}
	}
	step := func(format string, args ...any) error {
		s := fmt.Sprintf(format, args...)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("ceremony: interrupted before %s: %w", s, err)
		}
		if l.Progress != nil {
			l.Progress(s)
		}
		return nil
	}
	if err := step("starting in %s", dir); err != nil {
		return nil, err
	}
	c, err := Init(dir, l.Extra...)
	if err != nil {
		return nil, err
	}
	contribute := func(phase int) error {
		for _, n := range l.Contributors {
			if err := step("phase %d, %s contributes", phase, n); err != nil {
				return err
			}
			if _, err := c.Contribute(n); err != nil {
				return err
			}
		}
		return nil
	}
	if err := contribute(1); err != nil {
		return nil, err
	}
	b1, what, err := beaconOrFresh(l.Beacon1)
	if err != nil {
		return nil, err
	}
	if err := step("sealing phase 1 with %s", what); err != nil {
		return nil, err
	}
	if err := c.Seal(b1); err != nil {
		return nil, err
	}
	if err := contribute(2); err != nil {
		return nil, err
	}
	b2, what, err := beaconOrFresh(l.Beacon2)
	if err != nil {
		return nil, err
	}
	if err := step("finalizing phase 2 with %s", what); err != nil {
		return nil, err
	}
	return c.Finalize(b2, keyDir, l.Origin)
}

// beaconOrFresh returns b, or 32 fresh random bytes in hex when b is empty,
// and how to name it in progress lines.
func beaconOrFresh(b string) (beacon, what string, err error) {
	if b != "" {
		return b, "the public beacon", nil
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", fmt.Errorf("ceremony: beacon: %w", err)
	}
	return hex.EncodeToString(raw), "a fresh random beacon", nil
}
