package client

import (
	"fmt"
	"html/template"
	"math"
	"sort"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/medrec-zk/medrec/wallet"
)

// qrSVG renders text as a QR code in SVG (no network, no script); label
// names it for screen readers.
func qrSVG(text, label string) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", err
	}
	bm := q.Bitmap()
	n := len(bm)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="200" height="200" shape-rendering="crispEdges" role="img" aria-label="%s"><rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n, template.HTMLEscapeString(label), n, n)
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

// chart is one measurement over time: an SVG drawing and the same points
// as a table (the drawing's text alternative).
type chart struct {
	Title  string
	Unit   string
	Range  string // the reference range, in words ("" when none)
	SVG    string
	Rows   []chartRow // oldest first; the newest chartPoints
	Points int        // in the series
}

// chartPoints is how many points a chart draws one by one, and lists in
// its table; the timeline lists every record.
const chartPoints = 200

type chartRow struct {
	Date     time.Time
	Value    string // as the provider sent it
	Provider string
	Outside  bool // outside the reference range
}

// charts draws one chart per kind of numeric Observation (vitals, labs) in
// recs: points joined by a line, both axes labelled, and the reference
// range as a band where the records give one. The SVG scales to the width
// of the screen (viewBox, no fixed width).
func charts(recs []wallet.Record) []chart {
	type pt struct {
		t   time.Time
		v   float64
		r   wallet.Record
		out bool
	}
	series := map[string][]pt{}
	band := map[string]wallet.Record{} // the newest record with a range
	for _, r := range recs {
		if r.Type != "Observation" || r.Date.IsZero() {
			continue
		}
		v, unit, ok := r.Value64()
		if !ok {
			continue
		}
		name := r.Display + "\x00" + unit
		p := pt{t: r.Date, v: v, r: r}
		p.out = (r.HasLow && v < r.RangeLow) || (r.HasHigh && v > r.RangeHigh)
		series[name] = append(series[name], p)
		if (r.HasLow || r.HasHigh) && (band[name].Date.IsZero() || r.Date.After(band[name].Date)) {
			band[name] = r
		}
	}
	var names []string
	for n, s := range series {
		if len(s) >= 2 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []chart
	for _, key := range names {
		s := series[key]
		title, unit, _ := strings.Cut(key, "\x00")
		sort.Slice(s, func(i, j int) bool { return s[i].t.Before(s[j].t) })
		t0, t1 := s[0].t, s[len(s)-1].t
		lo, hi := s[0].v, s[0].v
		for _, p := range s {
			lo, hi = min(lo, p.v), max(hi, p.v)
		}
		rb, hasBand := band[key]
		if hasBand {
			if rb.HasLow {
				lo = min(lo, rb.RangeLow)
			}
			if rb.HasHigh {
				hi = max(hi, rb.RangeHigh)
			}
		}
		if hi == lo {
			lo, hi = lo-1, hi+1
		}
		pad := (hi - lo) * 0.08
		lo, hi = lo-pad, hi+pad
		span := t1.Sub(t0).Seconds()
		if span == 0 {
			span = 1
		}
		const w, h, left, right, top, bottom = 600.0, 220.0, 56.0, 16.0, 12.0, 34.0
		x := func(t time.Time) float64 { return left + (w-left-right)*t.Sub(t0).Seconds()/span }
		y := func(v float64) float64 { return top + (h-top-bottom)*(hi-v)/(hi-lo) }
		var b strings.Builder
		fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" class="chart" role="img" aria-label="%s in %s over time, %d measurements from %s to %s; the table below lists them">`,
			w, h, template.HTMLEscapeString(title), template.HTMLEscapeString(unit), len(s), t0.Format("2 Jan 2006"), t1.Format("2 Jan 2006"))
		fmt.Fprintf(&b, `<rect width="%.0f" height="%.0f" fill="#fff"/>`, w, h)
		if hasBand {
			bl, bh := lo, hi
			if rb.HasLow {
				bl = rb.RangeLow
			}
			if rb.HasHigh {
				bh = rb.RangeHigh
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d9efe1"><title>reference range %s</title></rect>`,
				left, y(bh), w-left-right, y(bl)-y(bh), template.HTMLEscapeString(rb.Range))
		}
		// Axes and the value ticks: low, middle, high.
		fmt.Fprintf(&b, `<path d="M%.0f %.0f V%.0f H%.0f" fill="none" stroke="#555" stroke-width="1"/>`, left, top, h-bottom, w-right)
		for _, v := range []float64{lo + pad, (lo + hi) / 2, hi - pad} {
			fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" font-size="12" fill="#333" text-anchor="end">%s</text>`,
				left, w-right, y(v), y(v), left-6, y(v)+4, tick(v))
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="12" fill="#333">%s</text><text x="%.0f" y="%.0f" font-size="12" fill="#333" text-anchor="end">%s</text>`,
			left, h-10, t0.Format("Jan 2006"), w-right, h-10, t1.Format("Jan 2006"))
		fmt.Fprintf(&b, `<text x="4" y="%.0f" font-size="12" fill="#333">%s</text>`, top+4, template.HTMLEscapeString(unit))
		var path strings.Builder
		for i, p := range s {
			if i == 0 {
				fmt.Fprintf(&path, "M%.1f %.1f", x(p.t), y(p.v))
			} else {
				fmt.Fprintf(&path, " L%.1f %.1f", x(p.t), y(p.v))
			}
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="#1f5f99" stroke-width="2"/>`, path.String())
		c := chart{Title: title, Unit: unit, Points: len(s)}
		if hasBand {
			c.Range = rb.Range
		}
		for i, p := range s {
			// Every point is drawn while points can be told apart; a long
			// series is its line, with the points outside the range.
			if len(s) <= chartPoints || p.out {
				fill := "#1f5f99"
				if p.out {
					fill = "#b3261e"
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: %s %s</title></circle>`,
					x(p.t), y(p.v), fill, p.t.Format("2 Jan 2006"), template.HTMLEscapeString(p.r.Value), template.HTMLEscapeString(unit))
			}
			if i >= len(s)-chartPoints { // the table: the newest chartPoints
				c.Rows = append(c.Rows, chartRow{Date: p.t, Value: p.r.Value, Provider: p.r.Provider.Name, Outside: p.out})
			}
		}
		b.WriteString(`</svg>`)
		c.SVG = b.String()
		out = append(out, c)
	}
	return out
}

// tick labels an axis value with no more digits than it needs.
func tick(v float64) string {
	if math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
}
