package client

import (
	"fmt"
	"html/template"
	"sort"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/wallet"
)

var funcs = template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.Format("2006-01-02")
	},
	"short": func(s string) string {
		if len(s) <= 18 {
			return s
		}
		return s[:10] + "…" + s[len(s)-6:]
	},
	"ms":   func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) },
	"svg":  func(s string) template.HTML { return template.HTML(s) }, // generated here, never from input
	"plus": func(a, b int) int { return a + b },
	"purpose": func(p uint8) string {
		if p == 0 {
			return "—"
		}
		return access.Purpose(p).String()
	},
}

// qrSVG renders text as a QR code in SVG (no network, no script).
func qrSVG(text string) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", err
	}
	bm := q.Bitmap()
	n := len(bm)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="200" height="200" shape-rendering="crispEdges" role="img" aria-label="QR code of the identity commitment"><rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n, n, n)
	for y, row := range bm {
		for x, on := range row {
			if on {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String(), nil
}

type chart struct {
	Title string
	SVG   string
}

// charts draws one line chart per kind of numeric Observation (vitals, labs).
func charts(recs []wallet.Record) []chart {
	type pt struct {
		t time.Time
		v float64
	}
	series := map[string][]pt{}
	units := map[string]string{}
	for _, r := range recs {
		if r.Type != "Observation" || r.Date.IsZero() {
			continue
		}
		v, unit, ok := r.Value()
		if !ok {
			continue
		}
		name := strings.SplitN(r.Summary, ":", 2)[0]
		series[name] = append(series[name], pt{r.Date, v})
		units[name] = unit
	}
	var names []string
	for n, s := range series {
		if len(s) >= 2 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []chart
	for _, name := range names {
		s := series[name]
		sort.Slice(s, func(i, j int) bool { return s[i].t.Before(s[j].t) })
		t0, t1 := s[0].t, s[len(s)-1].t
		lo, hi := s[0].v, s[0].v
		for _, p := range s {
			lo, hi = min(lo, p.v), max(hi, p.v)
		}
		if hi == lo {
			hi = lo + 1
		}
		span := t1.Sub(t0).Seconds()
		if span == 0 {
			span = 1
		}
		const w, h, pad = 480.0, 160.0, 30.0
		var path strings.Builder
		for i, p := range s {
			x := pad + (w-2*pad)*p.t.Sub(t0).Seconds()/span
			y := h - pad - (h-2*pad)*(p.v-lo)/(hi-lo)
			if i == 0 {
				fmt.Fprintf(&path, "M%.1f %.1f", x, y)
			} else {
				fmt.Fprintf(&path, " L%.1f %.1f", x, y)
			}
		}
		svg := fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%s over time">`+
			`<rect width="100%%" height="100%%" fill="#fafafa"/><path d="%s" fill="none" stroke="#2a6" stroke-width="2"/>`+
			`<text x="4" y="14" font-size="11">%.4g %s</text><text x="4" y="%.0f" font-size="11">%.4g</text>`+
			`<text x="%.0f" y="%.0f" font-size="11">%s</text><text x="%.0f" y="%.0f" font-size="11" text-anchor="end">%s</text></svg>`,
			w, h, w, h, template.HTMLEscapeString(name), path.String(), hi, template.HTMLEscapeString(units[name]), h-pad+12, lo,
			pad, h-4, t0.Format("2006-01-02"), w-pad, h-4, t1.Format("2006-01-02"))
		out = append(out, chart{Title: name, SVG: svg})
	}
	return out
}

const pageTemplates = `
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><title>MedRec-ZK</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:1000px;margin:1rem auto;padding:0 1rem;color:#222}
nav a{margin-right:1rem} table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left;vertical-align:top}
.err{background:#fdd;padding:.6rem;border-left:4px solid #c33} .ok{color:#185} .bad{color:#b22} .warn{background:#ffd;padding:.6rem;border-left:4px solid #cc3}
.badge{background:#c33;color:#fff;border-radius:1rem;padding:0 .5rem} code{word-break:break-all} form.inline{display:inline}
fieldset{margin:.8rem 0} .words li{font-family:monospace;font-size:1.1rem}
</style></head><body>
{{if .Unlocked}}<nav><a href="/home">Home</a><a href="/records">Records</a><a href="/share">Sharing</a><a href="/log">Access log</a><a href="/viewer">Shared with me</a>
<form class="inline" method="post" action="/lock"><input type="hidden" name="csrf" value="{{.CSRF}}"><button>Lock</button></form></nav>{{end}}
{{if .Error}}<p class="err" id="error">{{.Error}}</p>{{end}}
{{end}}
{{define "foot"}}</body></html>{{end}}

{{define "message"}}{{template "head" .}}<h1>{{.Title}}</h1><p class="err" id="error">{{.Message}}</p><p><a href="{{.Back}}">Back</a></p>{{template "foot"}}{{end}}

{{define "onboarding"}}{{template "head" .}}<h1>MedRec-ZK</h1>
<p>Your medical records stay at each provider. Your 12 words are the only key to all of them: this app keeps them encrypted on this computer and never sends them anywhere.</p>
{{if .HasKeystore}}<fieldset><legend>Unlock</legend><form method="post" action="/unlock"><input type="hidden" name="csrf" value="{{.CSRF}}">
<label>Password <input type="password" name="password" id="unlock-password" autocomplete="current-password"></label> <button id="unlock">Unlock</button></form></fieldset>
{{else}}<fieldset><legend>New here</legend><form method="post" action="/create"><input type="hidden" name="csrf" value="{{.CSRF}}"><button id="create">Create my keys</button></form></fieldset>{{end}}
<fieldset><legend>Restore from your 12 words</legend><form method="post" action="/restore"><input type="hidden" name="csrf" value="{{.CSRF}}">
<p><textarea name="words" id="restore-words" rows="2" cols="70" autocomplete="off" spellcheck="false"></textarea></p>
<label>New password <input type="password" name="password" id="restore-password"></label>
<label>Again <input type="password" name="password2" id="restore-password2"></label> <button id="restore">Restore</button></form></fieldset>
{{template "foot"}}{{end}}

{{define "words"}}{{template "head" .}}<h1>Your 12 words</h1>
<p class="warn">Write these words down, in order, and keep them safe. They are shown <strong>once</strong>. Anyone with them can read your records; without them you cannot recover your relationships.</p>
<ol class="words" id="words">{{range .Words}}<li>{{.}}</li>{{end}}</ol>
<form method="post" action="/create/confirm"><input type="hidden" name="csrf" value="{{.CSRF}}">
<p>To check your copy, type these words:</p>
{{range .Confirm}}<label>Word {{.}} <input name="w{{.}}" id="w{{.}}" autocomplete="off"></label> {{end}}
<p><label>Password for this computer <input type="password" name="password" id="password"></label>
<label>Again <input type="password" name="password2" id="password2"></label></p><button id="confirm">I wrote them down</button></form>
{{template "foot"}}{{end}}

{{define "home"}}{{template "head" .}}<h1>Home</h1>
{{if .Flash}}<p class="ok" id="flash">Done: {{.Flash}}.</p>{{end}}
<h2>Your identity commitment</h2><p>Show this at a provider's desk to be enrolled (once, at any provider). It reveals nothing about you or your other providers.</p>
<p><code id="commitment">{{.Commitment}}</code></p>{{svg .QR}}
<h2>Providers</h2><table id="providers"><tr><th>Provider</th><th>Relationship</th><th></th></tr>
{{range .Providers}}<tr><td>{{.Name}}</td><td>{{if .Rel}}<span class="ok">connected</span> (delegate <code>{{short .Rel.Delegate.Address.Hex}}</code>{{if .Rel.Rotation}}, rotated {{.Rel.Rotation}}×{{end}})
{{if .New}} <span class="badge" id="badge-{{.ID}}">{{.New}} new</span>{{end}}{{if .Err}} <span class="bad">{{.Err}}</span>{{end}}{{else}}not connected{{end}}</td>
<td>{{if .Rel}}<form class="inline" method="post" action="/rotate"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="provider" value="{{.ID}}"><button title="Use after losing a device">Rotate key</button></form>
{{else}}<form method="post" action="/connect"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="provider" value="{{.ID}}">
<input name="code" id="code-{{.ID}}" placeholder="claim code from the desk" autocomplete="off"> <button id="connect-{{.ID}}">Connect</button></form>{{end}}</td></tr>{{end}}</table>
<h2>To receive shared records</h2><p>Give a patient your viewer commitment (anonymous) <code id="viewer-commitment">{{.Viewer}}</code> or your address <code>{{.Address}}</code>.</p>
{{template "foot"}}{{end}}

{{define "records"}}{{template "head" .}}<h1>Records</h1>
<p>{{range .Results}}<span id="status-{{.Provider.ID}}">{{.Provider.Name}}: {{if .Err}}<span class="bad">unavailable — {{.Err}}</span>{{else}}<span class="ok">{{.Count}} records</span> ({{ms .Took}}){{end}}</span><br>{{end}}</p>
<form method="get" action="/records">Show <select name="type" id="filter"><option value="">everything</option>{{range .Types}}<option {{if eq . $.Type}}selected{{end}}>{{.}}</option>{{end}}</select> <button id="apply">Filter</button> <a href="/records/export">Export all as one FHIR Bundle</a></form>
{{range .Charts}}<h3>{{.Title}}</h3>{{svg .SVG}}{{end}}
{{if lt (len .Records) .Total}}<p id="more">Showing the newest {{len .Records}} of {{.Total}} records — <a href="/records?type={{.Type}}&amp;all=1" id="show-all">show all</a>.</p>{{end}}
<table id="timeline"><tr><th>Date</th><th>Provider</th><th>Type</th><th>What</th></tr>
{{range .Records}}<tr class="rec rec-{{.Type}}"><td>{{date .Date}}</td><td>{{.Provider.Name}}</td><td>{{.Type}}</td><td><details><summary>{{if .Summary}}{{.Summary}}{{else}}{{.ID}}{{end}}</summary><pre>{{printf "%s" .Raw}}</pre></details></td></tr>{{end}}</table>
{{template "foot"}}{{end}}

{{define "share"}}{{template "head" .}}<h1>Sharing</h1>
{{if .Flash}}<p class="ok" id="flash">Done: {{.Flash}}.</p>{{end}}
<form method="post" action="/share" id="share-form"><input type="hidden" name="csrf" value="{{.CSRF}}">
<p><label>Provider <select name="provider" id="share-provider">{{range .Rels}}<option value="{{.Provider.ID}}">{{.Provider.Name}}</option>{{end}}</select></label></p>
<p><label>With <input name="to" id="share-to" size="70" placeholder="a viewer commitment (anonymous, recommended) or an address 0x…"></label></p>
<fieldset><legend>What</legend>{{range .Types}}<label><input type="checkbox" name="type" value="{{.}}" id="type-{{.}}"> {{.}}</label> {{end}}</fieldset>
<p><label>Purpose <select name="purpose" id="share-purpose"><option>treatment</option><option>family</option><option>research</option><option>emergency</option></select></label>
<label>For <input name="days" value="30" size="4" id="share-days"> days</label></p><button id="share">Share</button></form>
<h2>Who can see what, where</h2><table id="grants"><tr><th>Provider</th><th>Who</th><th>What</th><th>Purpose</th><th>Until</th><th>Status</th><th></th></tr>
{{range .Grants}}<tr><td>{{.Provider}}</td><td>{{.Kind}} <code>{{short .Grantee}}</code></td><td>{{.Scope}}</td><td>{{.Purpose}}</td><td>{{date .Expiry}}</td><td class="status">{{.Status}}</td>
<td>{{if eq .Status "active"}}<form class="inline" method="post" action="/revoke"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="provider" value="{{.ID}}"><input type="hidden" name="kind" value="{{.KindNum}}"><input type="hidden" name="grantee" value="{{.Grantee}}"><button class="revoke">Revoke</button></form>{{end}}</td></tr>{{end}}</table>
{{template "foot"}}{{end}}

{{define "linkwarning"}}{{template "head" .}}<h1>This links your relationships</h1>
<p class="warn" id="link-warning">{{.To}} already has access at {{range .Links}}{{.}} {{end}}. Granting the same address at another provider lets anyone reading the chain see that both relationships belong to one patient. Share with the person's <strong>viewer commitment</strong> instead to stay unlinkable.</p>
<form method="post" action="/share"><input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="provider" value="{{.Provider}}"><input type="hidden" name="to" value="{{.To}}">
{{range .TypesList}}<input type="hidden" name="type" value="{{.}}">{{end}}<input type="hidden" name="purpose" value="{{.Purpose}}"><input type="hidden" name="days" value="{{.Days}}">
<input type="hidden" name="accept-link" value="yes"><button>Share anyway</button></form><p><a href="/share">Back</a></p>
{{template "foot"}}{{end}}

{{define "bundle"}}{{template "head" .}}<h1>Shared</h1><p>Give this to the viewer privately (it is useless without their own keys):</p>
<p><textarea id="bundle" rows="4" cols="90" readonly>{{.Bundle}}</textarea></p><p><a href="/share">Back to sharing</a></p>
{{template "foot"}}{{end}}

{{define "log"}}{{template "head" .}}<h1>Access log</h1>
{{range .Sections}}<h2>{{.Provider}}</h2>
{{if .Emergency}}<p class="warn" id="emergency">Emergency access was used {{.Emergency}} time(s) at {{.Provider}}.</p>{{end}}
{{if .Err}}<p class="bad">{{.Err}}</p>{{end}}
{{with .State}}<p id="state">Record set: {{if .Verified}}<span class="ok">verified against the provider's anchor on chain</span>{{else}}<span class="bad">not verified — {{.Problem}}</span>{{end}}</p>{{end}}
<table class="log"><tr><th>#</th><th>Who</th><th>Purpose</th><th>What</th><th>Outcome</th><th>Checked</th></tr>
{{range .Entries}}<tr class="entry {{.Decision}}"><td>{{.Seq}}</td><td>{{.Kind}} <code>{{short .Actor}}</code></td><td>{{purpose .Purpose}}</td><td>{{.Action}} {{range .Resources}}{{.}} {{end}}{{if .Detail}}({{.Detail}}){{end}}</td><td>{{.Decision}}</td>
<td>{{if .Verified}}<span class="ok verified">✔ on chain</span>{{else}}<span class="bad">{{.Problem}}</span>{{end}}</td></tr>{{end}}</table>{{end}}
{{template "foot"}}{{end}}

{{define "viewer"}}{{template "head" .}}<h1>Shared with me</h1>
<p>Your viewer commitment: <code id="my-viewer">{{.Viewer}}</code>. Your address: <code>{{.Address}}</code>.</p>
<h2>Read with a share bundle</h2><form method="post" action="/viewer/read"><input type="hidden" name="csrf" value="{{.CSRF}}">
<textarea name="bundle" id="viewer-bundle" rows="3" cols="90"></textarea><br><button id="viewer-read">Read</button></form>
<h2>Granted to my address</h2><table>{{range .Shared}}<tr><td>{{.Name}}</td><td>{{.Scope}}</td><td>{{.Status}}</td><td>
<form method="post" action="/viewer/read-grant"><input type="hidden" name="csrf" value="{{$.CSRF}}"><input type="hidden" name="provider" value="{{.Provider}}"><input type="hidden" name="tag" value="{{.Tag}}"><button>Read</button></form></td></tr>{{else}}<tr><td>Nothing yet.</td></tr>{{end}}</table>
{{template "foot"}}{{end}}

{{define "shared"}}{{template "head" .}}<h1>Shared records</h1><table id="shared"><tr><th>Date</th><th>Type</th><th>What</th></tr>
{{range .Records}}<tr class="rec rec-{{.Type}}"><td>{{date .Date}}</td><td>{{.Type}}</td><td>{{if .Summary}}{{.Summary}}{{else}}{{.ID}}{{end}}</td></tr>{{end}}</table><p><a href="/viewer">Back</a></p>
{{template "foot"}}{{end}}
`
