package client

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// TestRecordsPages: the timeline reads in pages of timelinePage, newest
// first, every record on exactly one page, Newer/Older links that keep the
// filters, and a page past the end showing the last.
func TestRecordsPages(t *testing.T) {
	ba := newBenchApp(t, 2, 250)
	row := regexp.MustCompile(`(?s)<pre>(.*?)</pre>`)
	seen := map[string]int{}
	for _, c := range []struct {
		page, count      string
		rows             int
		newer, older     bool
		olderLink, query string
	}{
		{"", "Records 1–200 of 500", 200, false, true, "/records?page=2", ""},
		{"2", "Records 201–400 of 500", 200, true, true, "/records?page=3", ""},
		{"3", "Records 401–500 of 500", 100, true, false, "", ""},
	} {
		path := "/records"
		if c.page != "" {
			path += "?page=" + c.page
		}
		body := ba.get(t, "GET", path, nil)
		if !strings.Contains(body, c.count) {
			t.Errorf("%s: no %q", path, c.count)
		}
		rows := row.FindAllStringSubmatch(body[strings.Index(body, `id="timeline"`):], -1)
		if len(rows) != c.rows {
			t.Errorf("%s: %d rows, want %d", path, len(rows), c.rows)
		}
		for _, r := range rows {
			seen[r[1]]++
		}
		if got := strings.Contains(body, `id="records-prev"`); got != c.newer {
			t.Errorf("%s: Newer link %v, want %v", path, got, c.newer)
		}
		if got := strings.Contains(body, `id="records-next"`); got != c.older {
			t.Errorf("%s: Older link %v, want %v", path, got, c.older)
		}
		if c.olderLink != "" && !strings.Contains(body, `href="`+c.olderLink+`"`) {
			t.Errorf("%s: no link to %s", path, c.olderLink)
		}
	}
	if len(seen) != 500 {
		t.Errorf("%d different records over the pages, want 500", len(seen))
	}
	for what, n := range seen {
		if n != 1 {
			t.Errorf("%s on %d pages", what, n)
		}
	}
	// Past the end: the last page. Filters travel with the links.
	if body := ba.get(t, "GET", "/records?page=99", nil); !strings.Contains(body, "Records 401–500 of 500") {
		t.Error("page 99 is not the last page")
	}
	body := ba.get(t, "GET", "/records?provider=1", nil)
	if !strings.Contains(body, "Records 1–200 of 250") || !strings.Contains(body, `href="/records?page=2&amp;provider=1"`) {
		t.Errorf("one provider's timeline: %s", fmt.Sprint(strings.Contains(body, "of 250")))
	}
}
