package probefailures

import "time"

// parseRFC3339 parses the timestamps agents send —
// 2006-01-02T15:04:05[.fraction](Z|±hh:mm) — without allocating, and
// returns the instant time.Parse(time.RFC3339Nano, …) returns for them
// (in UTC, where time.Parse gives a zone with the offset). It refuses
// anything else, including forms time.Parse accepts (a comma before the
// fraction, say): the caller then asks time.Parse.
func parseRFC3339(s []byte) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05Z") ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := atoi(s[0:4])
	month, ok2 := atoi(s[5:7])
	day, ok3 := atoi(s[8:10])
	hour, ok4 := atoi(s[11:13])
	minute, ok5 := atoi(s[14:16])
	sec, ok6 := atoi(s[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	s = s[19:]
	nsec := 0
	if len(s) >= 2 && s[0] == '.' && isDigit(s[1]) {
		// time.Parse keeps nine digits and drops the rest.
		n, digits := 1, 0
		for ; n < len(s) && isDigit(s[n]); n++ {
			if digits < 9 {
				nsec = nsec*10 + int(s[n]-'0')
				digits++
			}
		}
		for ; digits < 9; digits++ {
			nsec *= 10
		}
		s = s[n:]
	}
	offset := 0
	switch {
	case len(s) == 1 && s[0] == 'Z':
	case len(s) == len("+07:00") && (s[0] == '+' || s[0] == '-') && s[3] == ':':
		hh, ok1 := atoi(s[1:3])
		mm, ok2 := atoi(s[4:6])
		if !ok1 || !ok2 || hh > 23 || mm > 59 {
			return time.Time{}, false
		}
		if offset = (hh*60 + mm) * 60; s[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), true
}

// atoi parses unsigned decimal digits.
func atoi(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
