package probefailures

import (
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

// The fast path reads a payload in one pass with a scanner of its own
// (jsonscan.go), without reflection, and allocates only the strings of the
// rows it derives. It answers only when it is certain to give rowsSlow's
// answer, which is encoding/json's: the payload is valid JSON, it is an
// object, and every key that encoding/json could match with a field of
// rawProbe or rawSub is matched exactly and once. encoding/json matches
// keys case-insensitively ("TYPE", and "ſtatus" with U+017F, are "type"
// and "status") and lets the last of repeated keys win; escaped keys,
// non-ASCII keys, keys equal to a field's name but for case, and repeated
// fields all go to the slow path. So does every malformed probe result,
// so that the slow path alone words the errors.

// valueKind is what a known field holds.
type valueKind uint8

const (
	kindAbsent valueKind = iota
	kindNull
	kindString
	kindOther // a number, a boolean, an array or an object
)

// field is the value of a known field; for a string, its content (between
// the quotes) is p[start:end].
type field struct {
	start, end int
	kind       valueKind
	flags      uint8 // scanString's
}

// failing is a failing sub-result: a status "fail" with a control_id and
// a framework that are non-empty strings.
type failing struct{ control, framework field }

// The keys the fast path knows. A bit each in a set of keys seen.
const (
	keyUnknown = iota // a key no field takes: skipped
	keyUnsure         // a key encoding/json might match with a field
	keyType
	keyMode
	keyStatus
	keyProbeName
	keyObservedAt
	keySubResults
	keyControlID
	keyFramework
)

// probeScan is what one pass over a payload found.
type probeScan struct {
	typ, mode, status, probe, observed field
	// subsBad: sub_results is not what a well-formed probe result holds
	// (not an array of objects, a status that is not a string, a failing
	// sub-result without control_id or framework), or it is uncertain what
	// encoding/json makes of it. It matters only for a probe result.
	subsBad bool
	nfail   int
	fail    [8]failing // the first failing sub-results, in order
	more    []failing  // the others
}

// rowsFast derives the rows of ev when it is certain to agree with
// rowsSlow: for a probe result that is not malformed, and for a payload
// that is plainly no probe result. It returns ok=false whenever the slow
// path must decide, including for every malformed probe result.
func rowsFast(dst []Row, ev eventlog.Event) ([]Row, bool) {
	p := ev.Payload
	var s probeScan
	if !s.scan(p) {
		return dst, false
	}
	if !fieldIs(p, s.typ, TypeProbeResult) {
		return dst, true
	}
	if s.mode.kind == kindOther || s.status.kind == kindOther ||
		s.probe.kind != kindString || s.probe.start == s.probe.end || // a non-empty string decodes non-empty
		ev.HostID == "" || s.observed.kind == kindOther || s.subsBad {
		return dst, false
	}
	observed := ev.TS
	if s.observed.kind == kindString {
		var buf [64]byte
		v := appendUnquoted(buf[:0], p[s.observed.start:s.observed.end], s.observed.flags)
		t, ok := parseRFC3339(v)
		if !ok {
			var err error
			if t, err = time.Parse(time.RFC3339Nano, string(v)); err != nil {
				return dst, false
			}
		}
		observed = eventlog.NormalizeTime(t)
	}
	if s.nfail == 0 || !fieldIs(p, s.mode, "enforce") || !fieldIs(p, s.status, "fail") {
		return dst, true
	}
	return s.appendRows(dst, ev, observed), true
}

// appendRows appends a row per failing sub-result, once per control. The
// rows' strings share one allocation.
func (s *probeScan) appendRows(dst []Row, ev eventlog.Event, observed time.Time) []Row {
	p := ev.Payload
	var buf [512]byte
	b := appendUnquoted(buf[:0], p[s.probe.start:s.probe.end], s.probe.flags)
	probeEnd := len(b)
	// Each piece is a row's control_id and framework: b[c0:c1], b[c1:f1].
	type piece struct{ c0, c1, f1 int }
	var pieceBuf [8]piece
	pieces := pieceBuf[:0]
next:
	for k := range s.nfail {
		f := s.failAt(k)
		c0 := len(b)
		b = appendUnquoted(b, p[f.control.start:f.control.end], f.control.flags)
		c1 := len(b)
		b = appendUnquoted(b, p[f.framework.start:f.framework.end], f.framework.flags)
		f1 := len(b)
		for _, q := range pieces {
			if string(b[q.c0:q.c1]) == string(b[c0:c1]) && string(b[q.c1:q.f1]) == string(b[c1:f1]) {
				b = b[:c0]
				continue next
			}
		}
		pieces = append(pieces, piece{c0, c1, f1})
	}
	str := string(b)
	for _, q := range pieces {
		dst = append(dst, Row{Seq: ev.Seq, RolloutID: ev.RolloutID, HostID: ev.HostID, ProbeName: str[:probeEnd],
			ControlID: str[q.c0:q.c1], Framework: str[q.c1:q.f1], ObservedAt: observed})
	}
	return dst
}

func (s *probeScan) addFail(f failing) {
	if s.nfail < len(s.fail) {
		s.fail[s.nfail] = f
	} else {
		s.more = append(s.more, f)
	}
	s.nfail++
}

func (s *probeScan) failAt(k int) failing {
	if k < len(s.fail) {
		return s.fail[k]
	}
	return s.more[k-len(s.fail)]
}

// scan reads the payload p, which must be one JSON object. It returns
// false when the slow path must decide: p is not valid JSON or not an
// object, or a key at the top level is one encoding/json might match
// with a field other than exactly, or a field is repeated.
func (s *probeScan) scan(p []byte) bool {
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return false
	}
	var seen uint16
	if i = skipSpace(p, i+1); i < len(p) && p[i] == '}' {
		i++
	} else {
		for {
			if i >= len(p) || p[i] != '"' {
				return false
			}
			end, flags := scanString(p, i)
			if end < 0 {
				return false
			}
			key := topKey(p[i+1:end-1], flags)
			if key == keyUnsure || seen&(1<<key) != 0 {
				return false
			}
			if i = skipSpace(p, end); i >= len(p) || p[i] != ':' {
				return false
			}
			i = skipSpace(p, i+1)
			switch key {
			case keyUnknown:
				i = skipValue(p, i, 1)
			case keySubResults:
				i = s.scanSubs(p, i)
			case keyType:
				s.typ, i = scanField(p, i, 1)
			case keyMode:
				s.mode, i = scanField(p, i, 1)
			case keyStatus:
				s.status, i = scanField(p, i, 1)
			case keyProbeName:
				s.probe, i = scanField(p, i, 1)
			case keyObservedAt:
				s.observed, i = scanField(p, i, 1)
			}
			if i < 0 {
				return false
			}
			if key != keyUnknown {
				seen |= 1 << key
			}
			var closed bool
			if i, closed = afterValue(p, i, '}'); i < 0 {
				return false
			} else if closed {
				break
			}
		}
	}
	return skipSpace(p, i) == len(p)
}

// scanSubs scans the value of sub_results at p[i], the top-level object's.
func (s *probeScan) scanSubs(p []byte, i int) int {
	if i >= len(p) {
		return -1
	}
	switch p[i] {
	case 'n':
		return scanLiteral(p, i, "null")
	case '[':
	default:
		s.subsBad = true
		return skipValue(p, i, 1)
	}
	if i = skipSpace(p, i+1); i < len(p) && p[i] == ']' {
		return i + 1
	}
	for {
		if i >= len(p) {
			return -1
		}
		switch p[i] {
		case '{':
			i = s.scanSub(p, i)
		case 'n': // decodes as a sub-result without fields
			i = scanLiteral(p, i, "null")
		default:
			s.subsBad = true
			i = skipValue(p, i, 2)
		}
		if i < 0 {
			return -1
		}
		var closed bool
		if i, closed = afterValue(p, i, ']'); i < 0 || closed {
			return i
		}
	}
}

// scanSub scans the sub-result object whose brace is p[i], inside the
// top-level object and sub_results.
func (s *probeScan) scanSub(p []byte, i int) int {
	const depth = 3
	var control, framework, status field
	var seen uint16
	if i = skipSpace(p, i+1); i < len(p) && p[i] == '}' {
		i++
	} else {
		for {
			if i >= len(p) || p[i] != '"' {
				return -1
			}
			end, flags := scanString(p, i)
			if end < 0 {
				return -1
			}
			key := subKey(p[i+1:end-1], flags)
			if key != keyUnknown && (key == keyUnsure || seen&(1<<key) != 0) {
				s.subsBad = true
			}
			if i = skipSpace(p, end); i >= len(p) || p[i] != ':' {
				return -1
			}
			i = skipSpace(p, i+1)
			switch key {
			case keyControlID:
				control, i = scanField(p, i, depth)
			case keyFramework:
				framework, i = scanField(p, i, depth)
			case keyStatus:
				status, i = scanField(p, i, depth)
			default:
				i = skipValue(p, i, depth)
			}
			if i < 0 {
				return -1
			}
			seen |= 1 << key
			var closed bool
			if i, closed = afterValue(p, i, '}'); i < 0 {
				return -1
			} else if closed {
				break
			}
		}
	}
	switch {
	case status.kind == kindOther:
		s.subsBad = true
	case !fieldIs(p, status, "fail"):
	case control.kind != kindString || control.start == control.end ||
		framework.kind != kindString || framework.start == framework.end:
		s.subsBad = true
	default:
		s.addFail(failing{control, framework})
	}
	return i
}

// scanField scans the value of a known field at p[i], found inside depth
// arrays and objects.
func scanField(p []byte, i, depth int) (field, int) {
	if i < len(p) {
		switch p[i] {
		case '"':
			end, flags := scanString(p, i)
			return field{start: i + 1, end: end - 1, kind: kindString, flags: flags}, end
		case 'n':
			return field{kind: kindNull}, scanLiteral(p, i, "null")
		}
	}
	return field{kind: kindOther}, skipValue(p, i, depth)
}

// fieldIs reports whether f is a string that decodes to lit.
func fieldIs(p []byte, f field, lit string) bool {
	if f.kind != kindString {
		return false
	}
	raw := p[f.start:f.end]
	if f.flags == 0 {
		return string(raw) == lit
	}
	// An escape is at most six bytes long and decodes to at least one.
	if len(raw) > 6*len(lit) {
		return false
	}
	var buf [128]byte
	return string(appendUnquoted(buf[:0], raw, f.flags)) == lit
}

// topKey says which field of rawProbe encoding/json decodes the key
// (content between the quotes) into.
func topKey(key []byte, flags uint8) int {
	if flags != 0 {
		return keyUnsure // escaped or non-ASCII: it may decode or fold to a field's name
	}
	switch string(key) {
	case "type":
		return keyType
	case "mode":
		return keyMode
	case "status":
		return keyStatus
	case "probe_name":
		return keyProbeName
	case "observed_at":
		return keyObservedAt
	case "sub_results":
		return keySubResults
	}
	for _, name := range [...]string{"type", "mode", "status", "probe_name", "observed_at", "sub_results"} {
		if foldsTo(key, name) {
			return keyUnsure
		}
	}
	return keyUnknown
}

// subKey says which field of rawSub encoding/json decodes the key into.
func subKey(key []byte, flags uint8) int {
	if flags != 0 {
		return keyUnsure
	}
	switch string(key) {
	case "control_id":
		return keyControlID
	case "framework":
		return keyFramework
	case "status":
		return keyStatus
	}
	for _, name := range [...]string{"control_id", "framework", "status"} {
		if foldsTo(key, name) {
			return keyUnsure
		}
	}
	return keyUnknown
}

// foldsTo reports whether the ASCII key equals the lowercase name but for
// the case of letters.
func foldsTo(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i, c := range key {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}
