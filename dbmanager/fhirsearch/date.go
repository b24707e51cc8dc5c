package fhirsearch

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Precision is how much of a date is given.
type Precision uint8

// Precisions, coarsest first.
const (
	Year Precision = iota + 1
	Month
	Day
	Minute // a search value may stop at minutes; a stored dateTime may not
	Second
	Fraction // seconds with a fraction: as many digits as given, down to microseconds
)

// DateValue is the range of instants a FHIR date, dateTime or instant
// covers at its precision ("2020" is all of 2020, "2020-03-14T10:00:00Z" one
// second), and its year as written.
type DateValue struct {
	Lo, Hi    int64 // Unix microseconds, UTC, both included
	Year      int   // as written, before any time zone is applied
	Precision Precision
}

// dateRE is FHIR R4's date, dateTime and instant, and a search value's
// date and time to the minute: year (0001–9999), month, day, hours and
// minutes, seconds and a fraction, and a zone — each only after the one
// before. A value without a zone is UTC, as the validator reads stored ones.
var dateRE = regexp.MustCompile(`^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$`)

// ParseDate parses a FHIR date, dateTime or instant, or a search value's
// date to the minute.
func ParseDate(s string) (DateValue, error) {
	m := dateRE.FindStringSubmatch(s)
	if m == nil {
		return DateValue{}, fmt.Errorf("%q is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.f]][Z|±hh:mm])", s)
	}
	num := func(i int) int { n, _ := strconv.Atoi(m[i]); return n }
	year, month, day := num(1), 1, 1
	if year < 1 {
		return DateValue{}, fmt.Errorf("%q: year 0000 is not a date", s)
	}
	var (
		hour, minute, sec, nsec int
		prec                    = Year
		loc                     = time.UTC
	)
	if m[2] != "" {
		month, prec = num(2), Month
	}
	if m[3] != "" {
		day, prec = num(3), Day
	}
	if m[4] != "" {
		hour, minute, prec = num(4), num(5), Minute
		if hour > 23 || minute > 59 {
			return DateValue{}, fmt.Errorf("%q: no such time of day", s)
		}
	}
	if m[6] != "" {
		sec, prec = num(6), Second
		if sec > 59 {
			return DateValue{}, fmt.Errorf("%q: no such second", s)
		}
	}
	unit := time.Duration(0)
	if f := m[7]; f != "" {
		prec = Fraction
		digits := min(len(f), 6)
		frac, _ := strconv.Atoi(f[:digits])
		for i := digits; i < 9; i++ {
			frac *= 10
		}
		nsec = frac
		unit = time.Microsecond
		for i := digits; i < 6; i++ {
			unit *= 10
		}
	}
	if z := m[8]; z != "" && z != "Z" {
		zh, _ := strconv.Atoi(z[1:3])
		zm, _ := strconv.Atoi(z[4:6])
		if zh > 14 || zm > 59 || zh == 14 && zm != 0 {
			return DateValue{}, fmt.Errorf("%q: no such time zone", s)
		}
		off := zh*3600 + zm*60
		if z[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	}
	if month < 1 || month > 12 {
		return DateValue{}, fmt.Errorf("%q: no such month", s)
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc)
	if t.Day() != day {
		return DateValue{}, fmt.Errorf("%q: no such day", s)
	}
	var end time.Time
	switch prec {
	case Year:
		end = t.AddDate(1, 0, 0)
	case Month:
		end = t.AddDate(0, 1, 0)
	case Day:
		end = t.AddDate(0, 0, 1)
	case Minute:
		end = t.Add(time.Minute)
	case Second:
		end = t.Add(time.Second)
	case Fraction:
		end = t.Add(unit)
	}
	return DateValue{Lo: t.UnixMicro(), Hi: end.UnixMicro() - 1, Year: year, Precision: prec}, nil
}
