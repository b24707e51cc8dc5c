package client

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/wallet"
)

// An op is a chain write the patient started (a share at one or more
// providers, a revocation): it runs under the app's context, not the
// request's, and its page (GET /op/:id) shows how far each provider's
// write has come — sent, in block N, in force — refreshing itself each
// second until done (a meta refresh: the pages carry no script). The form
// key that started it maps to it, so the same form sent again shows the
// same op and writes nothing twice. Ops live in memory and end with the
// session: their outcome may hold a share bundle, a secret.

// op is one chain write and its progress.
type op struct {
	ID, Kind, Title string
	Started         time.Time

	mu      sync.Mutex
	Steps   []*opStep
	Done    bool
	Took    time.Duration
	Summary string // what was done, in words
	Bundles string // anonymous shares: what to hand the viewer, one per line
}

// opStep is the write at one provider.
type opStep struct {
	Provider string
	Stage    wallet.Stage
	Block    uint64
	Err      string
	Took     time.Duration // from the start to in force (or to the failure)
	Finished bool
	cancel   context.CancelFunc
}

// keptOps bounds how many ops the app remembers in a session.
const keptOps = 64

// opFor returns the op a form key started, if any.
func (a *App) opFor(key string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.opByKey[key]
	return id, ok
}

// startOp returns the op of key, creating it (started: true) unless the
// same key already made one — two submits racing get the same op.
func (a *App) startOp(key, kind, title string, rels []wallet.Relationship) (*op, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.opByKey[key]; ok {
		if o, ok := a.ops[id]; ok {
			return o, false
		}
	}
	if len(a.ops) >= keptOps {
		for id, o := range a.ops { // forget finished ones first
			o.mu.Lock()
			done := o.Done
			o.mu.Unlock()
			if done {
				delete(a.ops, id)
			}
		}
	}
	o := &op{ID: newKey(), Kind: kind, Title: title, Started: time.Now()}
	for _, r := range rels {
		o.Steps = append(o.Steps, &opStep{Provider: r.Provider.Name})
	}
	a.ops[o.ID] = o
	a.opByKey[key] = o.ID
	return o, true
}

// opContext is the context step i's write runs under: the app's, bounded,
// reporting progress into the step.
func (a *App) opContext(o *op, i int) context.Context {
	ctx, cancel := context.WithTimeout(a.ctx, 3*time.Minute)
	o.mu.Lock()
	o.Steps[i].cancel = cancel // finish releases it
	o.mu.Unlock()
	return wallet.WithProgress(ctx, func(s wallet.Stage, block uint64) {
		o.mu.Lock()
		defer o.mu.Unlock()
		st := o.Steps[i]
		if s > st.Stage {
			st.Stage = s
		}
		if s == wallet.StageInBlock {
			st.Block = block
		}
		if s == wallet.StageInForce {
			st.Took = time.Since(o.Started)
		}
	})
}

// finish records how step i ended.
func (o *op) finish(i int, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.Steps[i]
	st.Finished = true
	if st.cancel != nil {
		st.cancel()
	}
	if err != nil {
		st.Err = plain(err)
		st.Took = time.Since(o.Started)
	} else {
		st.Stage = wallet.StageInForce
		if st.Took == 0 {
			st.Took = time.Since(o.Started)
		}
	}
}

// complete marks the op done after fill sets its outcome.
func (o *op) complete(fill func(*op)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fill(o)
	o.Done, o.Took = true, time.Since(o.Started)
}

// okProviders names the providers whose write went through (o.mu held).
func (o *op) okProviders() string {
	var names []string
	for _, s := range o.Steps {
		if s.Err == "" {
			names = append(names, s.Provider)
		}
	}
	return strings.Join(names, " and ")
}

// opView is an op as its page shows it (a copy, taken under the lock).
type opView struct {
	ID, Kind, Title string
	Steps           []opStep
	Done            bool
	Failed, OK      int
	Took            time.Duration
	Summary         string
	Bundles         string
}

func (a *App) opPage(c *fiber.Ctx) error {
	a.mu.Lock()
	o, ok := a.ops[c.Params("id")]
	a.mu.Unlock()
	if !ok {
		return userErr("that action's page is no longer kept (the app was locked since); the Sharing page shows every grant as it is now")
	}
	o.mu.Lock()
	v := opView{ID: o.ID, Kind: o.Kind, Title: o.Title, Done: o.Done, Took: o.Took, Summary: o.Summary, Bundles: o.Bundles}
	for _, s := range o.Steps {
		v.Steps = append(v.Steps, *s)
		if s.Finished && s.Err != "" {
			v.Failed++
		} else if s.Finished {
			v.OK++
		}
	}
	o.mu.Unlock()
	data := fiber.Map{"Op": v, "Title": v.Title}
	if !v.Done {
		data["Refresh"] = 1
	}
	return a.render(c, "op", data)
}
