package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxLine is the longest NDJSON line (one resource) ImportNDJSON reads.
const MaxLine = 16 << 20

// errLineTooLong: a line longer than MaxLine.
var errLineTooLong = fmt.Errorf("line longer than %d bytes", MaxLine)

// lineReader reads NDJSON lines: each ends at "\n" (a "\r" before it is
// dropped; the last may end at the end of the input).
type lineReader struct {
	br  *bufio.Reader
	buf []byte
	n   int // lines read
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 256<<10)}
}

// next returns the next line (valid until the next call) and its number
// (from 1); io.EOF at the end.
func (l *lineReader) next() ([]byte, int, error) {
	l.buf = l.buf[:0]
	for {
		chunk, err := l.br.ReadSlice('\n')
		l.buf = append(l.buf, chunk...)
		if len(l.buf) > MaxLine+2 {
			return nil, l.n + 1, errLineTooLong
		}
		switch {
		case err == nil:
			l.n++
			line := bytes.TrimSuffix(bytes.TrimSuffix(l.buf, []byte("\n")), []byte("\r"))
			if len(line) > MaxLine {
				return nil, l.n, errLineTooLong
			}
			return line, l.n, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(l.buf) > 0:
			l.n++
			return bytes.TrimSuffix(l.buf, []byte("\r")), l.n, nil
		default:
			return nil, l.n + 1, err
		}
	}
}

// lineScan is what a structural scan of one line finds: the resource's
// type and id (top-level members) and every "reference" string in it.
type lineScan struct {
	Type string
	ID   string
	Refs []refSpan
}

// refSpan is one "reference" string value: line[Start:End] is its JSON
// string literal, quotes included, and Value what it says.
type refSpan struct {
	Start, End int
	Value      string
}

// scanLine walks one line as JSON without building it: strings (with their
// escapes), nesting, and which strings are keys. It finds the top-level
// resourceType and id and every string value of a "reference" member. It
// checks the structure it walks (one object, balanced, strings closed and
// decodable, nothing after the object), not JSON's whole grammar — the
// validator does that.
func scanLine(line []byte) (lineScan, error) {
	var s lineScan
	i := skipSpace(line, 0)
	if i == len(line) || line[i] != '{' {
		return s, errors.New("not a JSON object")
	}
	depth, closedAt := 0, -1
	key, expectValue := "", false
	for ; i < len(line); i++ {
		if closedAt >= 0 {
			if !isSpace(line[i]) {
				return s, errors.New("data after the resource")
			}
			continue
		}
		switch c := line[i]; c {
		case '"':
			end, err := stringEnd(line, i)
			if err != nil {
				return s, err
			}
			j := skipSpace(line, end)
			if j < len(line) && line[j] == ':' {
				if key, err = decodeString(line[i:end]); err != nil {
					return s, err
				}
				expectValue = true
				i = j
				continue
			}
			if expectValue {
				switch {
				case depth == 1 && key == "resourceType":
					s.Type, err = decodeString(line[i:end])
				case depth == 1 && key == "id":
					s.ID, err = decodeString(line[i:end])
				case key == "reference":
					var v string
					v, err = decodeString(line[i:end])
					s.Refs = append(s.Refs, refSpan{Start: i, End: end, Value: v})
				}
				if err != nil {
					return s, err
				}
			}
			expectValue = false
			i = end - 1
		case '{', '[':
			depth++
			expectValue = false
			if depth > 256 {
				return s, errors.New("nested too deeply")
			}
		case '}', ']':
			depth--
			expectValue = false
			if depth < 0 {
				return s, errors.New("unbalanced brackets")
			}
			if depth == 0 {
				closedAt = i
			}
		case ',':
			expectValue = false
		}
	}
	if closedAt < 0 {
		return s, errors.New("the object is not closed")
	}
	return s, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index after the closing quote of the string that
// starts at b[i] (a quote).
func stringEnd(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// decodeString decodes a JSON string literal, quotes included.
func decodeString(lit []byte) (string, error) {
	if bytes.IndexByte(lit, '\\') < 0 && utf8.Valid(lit) {
		return string(lit[1 : len(lit)-1]), nil
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", fmt.Errorf("bad string: %w", err)
	}
	return s, nil
}

// rewriteRefs returns line with the reference literals of spans replaced by
// the JSON strings of values (same order; spans ascending, as scanLine
// returns them). Nothing else changes.
func rewriteRefs(line []byte, spans []refSpan, values []string) []byte {
	out := make([]byte, 0, len(line)+32*len(spans))
	prev := 0
	for i, sp := range spans {
		out = append(out, line[prev:sp.Start]...)
		q, _ := json.Marshal(values[i])
		out = append(out, q...)
		prev = sp.End
	}
	return append(out, line[prev:]...)
}

// patientOfRef returns the patient id a compartment reference names:
// "Patient/<id>" (with or without "/_history/…") or "urn:uuid:<id>".
func patientOfRef(ref string) (string, bool) {
	switch {
	case strings.HasPrefix(ref, "Patient/"):
		id, _, _ := strings.Cut(strings.TrimPrefix(ref, "Patient/"), "/")
		return id, id != ""
	case strings.HasPrefix(ref, "urn:uuid:"):
		id := strings.ToLower(strings.TrimPrefix(ref, "urn:uuid:"))
		return id, id != ""
	}
	return "", false
}
