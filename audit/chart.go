package audit

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"time"
)

// timeline is what the chart draws: when each commitment was enrolled, and
// each open's anonymity set.
type timeline struct {
	enrolBlocks []uint64
	opens       []openPoint
	times       map[uint64]uint64
	threshold   uint32
}

type openPoint struct {
	block    uint64
	size     uint32
	provider uint32
}

func (a *analyzer) timeline() *timeline {
	t := &timeline{enrolBlocks: a.enrolBlocks, times: a.times, threshold: a.cfg.MinAnonymity, opens: make([]openPoint, len(a.opens))}
	for i, o := range a.opens {
		t.opens[i] = openPoint{block: o.block, size: o.setSize, provider: o.provider}
	}
	return t
}

const (
	chartW, chartH                   = 960, 420
	padL, padR, padT, padB           = 70, 20, 40, 60
	plotW, plotH                     = chartW - padL - padR, chartH - padT - padB
	maxOpenDots                      = 4000
	colourSet, colourOpen, colourBad = "#2b6cb0", "#2f855a", "#c53030"
)

// WriteChart draws the anonymity set over time as a standalone SVG (or, with
// asHTML, an HTML page with the SVG inline): the number of enrolled
// commitments as a step line, each open as a dot at its anonymity set (red
// below the threshold), and the threshold. Time is block time when every
// drawn block's time is known, otherwise the block number. Nothing is fetched
// from the network when the file is viewed.
func (r *Report) WriteChart(w io.Writer, asHTML bool) error {
	bw := bufio.NewWriter(w)
	t := r.timeline
	if t == nil {
		t = &timeline{}
	}
	if asHTML {
		fmt.Fprintf(bw, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>MedRec-ZK anonymity set, chain %s</title></head>\n<body style=\"font-family:sans-serif\">\n", html.EscapeString(r.ChainID))
		fmt.Fprintf(bw, "<h1>Anonymity set over time</h1>\n<p>Chain %s, blocks %d–%d: %d enrolled, %d opens, smallest set %d (threshold %d).</p>\n",
			html.EscapeString(r.ChainID), r.FromBlock, r.ToBlock, r.Stats.Enrolled, r.Stats.Opens, r.Stats.MinAnonymitySet, t.threshold)
	}
	t.svg(bw, fmt.Sprintf("Anonymity set over time — chain %s, blocks %d–%d", r.ChainID, r.FromBlock, r.ToBlock))
	if asHTML {
		fmt.Fprintf(bw, "\n</body></html>\n")
	}
	return bw.Flush()
}

func (t *timeline) svg(w io.Writer, title string) {
	useTime := true
	x := func(b uint64) uint64 { return t.times[b] }
	for _, b := range t.enrolBlocks {
		if t.times[b] == 0 {
			useTime = false
			break
		}
	}
	for _, o := range t.opens {
		if t.times[o.block] == 0 {
			useTime = false
			break
		}
	}
	if !useTime {
		x = func(b uint64) uint64 { return b }
	}
	var xmin, xmax uint64
	var ymax uint32 = max(t.threshold, 1)
	first := true
	see := func(b uint64) {
		v := x(b)
		if first || v < xmin {
			xmin = v
		}
		if first || v > xmax {
			xmax = v
		}
		first = false
	}
	for _, b := range t.enrolBlocks {
		see(b)
	}
	for _, o := range t.opens {
		see(o.block)
		ymax = max(ymax, o.size)
	}
	ymax = max(ymax, uint32(len(t.enrolBlocks)))
	if xmax == xmin {
		xmax = xmin + 1
	}
	yTop := float64(ymax) * 1.08
	px := func(v uint64) float64 { return padL + float64(v-xmin)/float64(xmax-xmin)*plotW }
	py := func(v float64) float64 { return padT + plotH - v/yTop*plotH }

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="%d" y="22" font-size="15">%s</text>`+"\n", padL, html.EscapeString(title))
	// Axes and ticks.
	fmt.Fprintf(w, `<g stroke="#444"><line x1="%d" y1="%d" x2="%d" y2="%d"/><line x1="%d" y1="%d" x2="%d" y2="%d"/></g>`+"\n",
		padL, padT, padL, padT+plotH, padL, padT+plotH, padL+plotW, padT+plotH)
	step := niceStep(yTop / 5)
	for v := 0.0; v <= yTop; v += step {
		y := py(v)
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n",
			padL, y, padL+plotW, y, padL-6, y+4, v)
	}
	layout := "2006-01-02"
	switch span := time.Duration(xmax-xmin) * time.Second; {
	case span < time.Hour:
		layout = "15:04:05"
	case span < 48*time.Hour:
		layout = "01-02 15:04"
	}
	for i := uint64(0); i <= 5; i++ {
		xv := xmin + (xmax-xmin)*i/5
		label := fmt.Sprintf("%d", xv)
		if useTime {
			label = time.Unix(int64(xv), 0).UTC().Format(layout)
		}
		anchor := map[uint64]string{0: "start", 5: "end"}[i]
		if anchor == "" {
			anchor = "middle"
		}
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="%s">%s</text>`+"\n", px(xv), padT+plotH+18, anchor, label)
	}
	axis := "block"
	if useTime {
		axis = "block time (UTC)"
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, chartH-14, axis)
	fmt.Fprintf(w, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">commitments</text>`+"\n", padT+plotH/2, padT+plotH/2)

	// Enrolled commitments: a step line, one point per pixel column.
	if n := len(t.enrolBlocks); n > 0 {
		var pts strings.Builder
		lastY := py(0)
		fmt.Fprintf(&pts, "%.1f,%.1f", px(x(t.enrolBlocks[0])), lastY)
		for i, b := range t.enrolBlocks {
			xx := px(x(b))
			if i+1 < n && int(px(x(t.enrolBlocks[i+1]))) == int(xx) {
				continue // the column's last enrolment draws it
			}
			y := py(float64(i + 1))
			fmt.Fprintf(&pts, " %.1f,%.1f %.1f,%.1f", xx, lastY, xx, y)
			lastY = y
		}
		fmt.Fprintf(&pts, " %d,%.1f", padL+plotW, lastY)
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", colourSet, pts.String())
	}
	// Threshold.
	ty := py(float64(t.threshold))
	fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>`+"\n", padL, ty, padL+plotW, ty, colourBad)
	// Opens: every one below the threshold (drawn last, on top), the others
	// thinned to one per pixel.
	seen := map[[2]int]bool{}
	drawn := 0
	fmt.Fprintf(w, `<g fill-opacity="0.6">`+"\n")
	for _, bad := range []bool{false, true} {
		for _, o := range t.opens {
			if (o.size < t.threshold) != bad {
				continue
			}
			xx, yy := px(x(o.block)), py(float64(o.size))
			k := [2]int{int(xx), int(yy)}
			if !bad && (seen[k] || drawn >= maxOpenDots) {
				continue
			}
			seen[k] = true
			drawn++
			c := colourOpen
			if bad {
				c = colourBad
			}
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>block %d, provider %d: set %d</title></circle>`+"\n", xx, yy, c, o.block, o.provider, o.size)
		}
	}
	fmt.Fprintf(w, "</g>\n")
	// Legend.
	lx, ly := padL+10, padT+10
	fmt.Fprintf(w, `<g><rect x="%d" y="%d" width="245" height="62" fill="white" stroke="#ccc"/>`, lx, ly)
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5"/><text x="%d" y="%d">enrolled commitments</text>`, lx+8, ly+14, lx+30, ly+14, colourSet, lx+36, ly+18)
	fmt.Fprintf(w, `<circle cx="%d" cy="%d" r="3" fill="%s"/><text x="%d" y="%d">open: anonymity set of its proof</text>`, lx+19, ly+32, colourOpen, lx+36, ly+36)
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-dasharray="6 4"/><text x="%d" y="%d">threshold %d</text></g>`+"\n", lx+8, ly+50, lx+30, ly+50, colourBad, lx+36, ly+54, t.threshold)
	fmt.Fprintf(w, "</svg>\n")
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten (at least 1).
func niceStep(x float64) float64 {
	if x <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}
