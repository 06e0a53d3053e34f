package entryjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/canonlog/canonlog/eventlog"
)

// The fields an entry object may hold. Each input accepts a subset.
const (
	Kind      = "kind"       // a JSON string: eventlog.Entry.Kind
	TS        = "ts"         // a JSON string, RFC 3339: eventlog.Entry.TS
	HostID    = "host_id"    // a JSON string; "" is no host
	RolloutID = "rollout_id" // a JSON string; "" is no rollout
	EventID   = "event_id"   // a JSON string; "" is no event id
	Payload   = "payload"    // any JSON value, kept byte for byte
	// PayloadText is a JSON string holding the payload's exact text: a
	// payload with line breaks, or with whitespace around it, fits on one
	// line this way. It stands for Payload; an object holds one of them.
	PayloadText = "payload_text"
	// Seq is accepted and ignored: query output carries the stored seq.
	Seq = "seq"
)

var known = []string{Kind, TS, HostID, RolloutID, EventID, Payload, PayloadText, Seq}

// Format is the set of fields one input accepts. Build it once with
// NewFormat or MustFormat.
type Format struct {
	fields []string // in the order messages list them
}

// NewFormat returns the format whose objects may hold the given fields
// (the constants above), listed in that order in error messages.
func NewFormat(fields ...string) (*Format, error) {
	seen := map[string]bool{}
	for _, f := range fields {
		switch {
		case !slices.Contains(known, f):
			return nil, fmt.Errorf("entryjson: unknown field %q: use the constants Kind, TS, HostID, RolloutID, EventID, Payload, PayloadText, Seq", f)
		case seen[f]:
			return nil, fmt.Errorf("entryjson: field %q listed twice", f)
		}
		seen[f] = true
	}
	if !seen[Payload] {
		return nil, errors.New("entryjson: a format needs the payload field: every entry has a payload")
	}
	return &Format{fields: fields}, nil
}

// MustFormat is NewFormat for package-level variables: it panics on a
// bad field list.
func MustFormat(fields ...string) *Format {
	f, err := NewFormat(fields...)
	if err != nil {
		panic(err)
	}
	return f
}

// Decode reads data, which must hold exactly one JSON object (JSON
// whitespace around it is allowed), as an entry. Only the fields data holds
// are set: Kind empty when there is no kind, TS zero when there is no ts.
// The payload is required and keeps its bytes exactly as they appear in
// data. Every refusal is an *Error wrapping one of the sentinels, whose
// message counts byte positions from 1; the other checks of an entry are
// eventlog.Entry.Validate's.
func (f *Format) Decode(data []byte) (eventlog.Entry, error) {
	if e, ok := f.decodePlain(data); ok {
		return e, nil
	}
	return f.decode(data)
}

// decode is Decode by encoding/json, for every input: the reference that
// decodePlain must agree with, and the one that explains refusals.
func (f *Format) decode(data []byte) (eventlog.Entry, error) {
	var (
		e          eventlog.Entry
		seen       = map[string]bool{}
		hasPayload bool
	)
	err := Object(data, "an entry", f.fields, func(key string, v json.RawMessage, at int64) error {
		seen[key] = true
		switch key {
		case Seq:
			return nil
		case Payload:
			e.Payload, hasPayload = v, true
			return nil
		}
		s, err := String(key, v, at)
		if err != nil {
			return err
		}
		switch key {
		case Kind:
			e.Kind = eventlog.Kind(s)
		case TS:
			e.TS, err = parseTS(s)
		case HostID:
			e.HostID = s
		case RolloutID:
			e.RolloutID = s
		case EventID:
			e.EventID = s
		case PayloadText:
			e.Payload, hasPayload = json.RawMessage(s), true
		}
		return err
	})
	// A refusal returns no entry: nothing half-decoded to misuse.
	switch {
	case err != nil:
		return eventlog.Entry{}, err
	case seen[Payload] && seen[PayloadText]:
		return eventlog.Entry{}, &Error{Field: PayloadText, Err: ErrDuplicateField, Reason: `give "payload" or "payload_text", not both`}
	case !hasPayload:
		reason := `"payload" is required: the entry's JSON document`
		if slices.Contains(f.fields, PayloadText) {
			reason += `, or "payload_text", its text as a JSON string`
		}
		return eventlog.Entry{}, &Error{Field: Payload, Err: ErrRequired, Reason: reason}
	}
	return e, nil
}

// Object reads data, which must hold exactly one JSON object (JSON
// whitespace around it is allowed), and calls value with each of its
// fields in the order data holds them: the key, the raw value and the
// byte offset (from 0) at which the value starts in data. It refuses, as
// Decode does, a key that is not one of fields spelled exactly (what
// encoding/json would match case-insensitively), given twice (where
// encoding/json keeps the last) or not decodable as written; decoding the
// values is value's business, with String for text. what names the object
// in messages, as in "a gate decision". A refusal is an *Error, or the
// error value returned, which ends the walk.
func Object(data []byte, what string, fields []string, value func(key string, v json.RawMessage, at int64) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var obj json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return syntaxError(err)
	}
	end := dec.InputOffset()
	if rest := bytes.TrimLeft(data[end:], jsonSpace); len(rest) > 0 {
		return &Error{Err: ErrTrailingData, Reason: fmt.Sprintf("%v: more at byte %d, after the object: %s is exactly one JSON object", ErrTrailingData, len(data)-len(rest)+1, what)}
	}
	if obj[0] != '{' {
		return &Error{Err: ErrNotObject, Reason: fmt.Sprintf("%v: %s is one object with the fields %s", ErrNotObject, what, strings.Join(fields, ", "))}
	}
	base := end - int64(len(obj)) // where obj starts in data

	// obj is valid JSON, so walking it cannot fail; each value comes as
	// its raw bytes, which are checked before anything decodes them.
	w := json.NewDecoder(bytes.NewReader(obj))
	if _, err := w.Token(); err != nil {
		return syntaxError(err)
	}
	seen := map[string]bool{}
	for w.More() {
		before := w.InputOffset()
		tok, err := w.Token()
		if err != nil {
			return syntaxError(err)
		}
		rawKey := bytes.TrimLeft(obj[before:w.InputOffset()], jsonSpace+",")
		keyAt := base + w.InputOffset() - int64(len(rawKey))
		if off, why := checkString(rawKey); why != "" {
			return &Error{Err: ErrNotStorable, Reason: fmt.Sprintf("a field name %s at byte %d: no field is spelled so", why, keyAt+int64(off)+1)}
		}
		key := tok.(string)
		if !slices.Contains(fields, key) {
			return unknown(fields, key)
		}
		if seen[key] {
			return &Error{Field: key, Err: ErrDuplicateField, Reason: fmt.Sprintf("field %q given twice (at byte %d): give each field once", key, keyAt+1)}
		}
		seen[key] = true
		var v json.RawMessage
		if err := w.Decode(&v); err != nil {
			return syntaxError(err)
		}
		if err := value(key, v, base+w.InputOffset()-int64(len(v))); err != nil {
			return err
		}
	}
	return nil
}

// jsonSpace is the whitespace JSON allows between tokens.
const jsonSpace = " \t\r\n"

func syntaxError(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return &Error{Err: ErrSyntax, Reason: fmt.Sprintf("%v: empty", ErrSyntax)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Err: ErrSyntax, Reason: fmt.Sprintf("%v: it ends inside its JSON object (cut short?)", ErrSyntax)}
	case errors.As(err, &se):
		return &Error{Err: ErrSyntax, Reason: fmt.Sprintf("%v: %v (at byte %d)", ErrSyntax, se, se.Offset)}
	}
	return &Error{Err: ErrSyntax, Reason: fmt.Sprintf("%v: %v", ErrSyntax, err)}
}

func unknown(fields []string, key string) error {
	for _, k := range fields {
		if strings.EqualFold(k, key) {
			return &Error{Err: ErrUnknownField, Reason: fmt.Sprintf("%v %s: field names are case-sensitive (did you mean %q?)", ErrUnknownField, quote(key), k)}
		}
	}
	return &Error{Err: ErrUnknownField, Reason: fmt.Sprintf("%v %s: the fields are %s", ErrUnknownField, quote(key), strings.Join(fields, ", "))}
}

// String decodes the JSON string v, the value of field key that starts at
// byte at (from 0) of the input, once its raw bytes are known to decode to
// exactly what they say: not null or another type (ErrWrongType), valid
// UTF-8 without a lone surrogate escape (ErrNotStorable). Decode reads its
// text fields so; an Object's value function may too. A refusal is an
// *Error naming key.
func String(key string, v json.RawMessage, at int64) (string, error) {
	if v[0] != '"' {
		reason := fmt.Sprintf("field %q must be a string, not %s", key, typeName(v))
		if v[0] == 'n' {
			reason += ": leave the field out instead"
		}
		return "", &Error{Field: key, Err: ErrWrongType, Reason: reason}
	}
	if off, why := checkString(v); why != "" {
		return "", &Error{Field: key, Err: ErrNotStorable, Reason: fmt.Sprintf("field %q %s at byte %d: it cannot be stored as given", key, why, at+int64(off)+1)}
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", &Error{Field: key, Err: ErrSyntax, Reason: fmt.Sprintf("field %q: %v", key, err)}
	}
	return s, nil
}

// checkString reports where and why the raw JSON string token s (quotes
// included, already valid JSON) would not decode to what it says:
// encoding/json replaces invalid UTF-8 and each half of a lone surrogate
// escape with U+FFFD. why is "" when s decodes exactly.
func checkString(s []byte) (offset int, why string) {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			return i, fmt.Sprintf("is not valid UTF-8 (byte 0x%02x)", s[i])
		}
		i += size
	}
	for i := 1; i < len(s)-1; i++ {
		if s[i] != '\\' {
			continue
		}
		if s[i+1] != 'u' {
			i++ // the escaped character
			continue
		}
		r := hex4(s[i+2 : i+6])
		switch {
		case r >= 0xd800 && r < 0xdc00: // high half: the low half must follow
			if i+12 <= len(s) && s[i+6] == '\\' && s[i+7] == 'u' {
				if lo := hex4(s[i+8 : i+12]); lo >= 0xdc00 && lo < 0xe000 {
					i += 11
					continue
				}
			}
			return i, fmt.Sprintf("holds the lone surrogate escape %s", s[i:i+6])
		case r >= 0xdc00 && r < 0xe000:
			return i, fmt.Sprintf("holds the lone surrogate escape %s", s[i:i+6])
		}
		i += 5
	}
	return 0, ""
}

// hex4 reads four hex digits (valid JSON guarantees them after \u).
func hex4(b []byte) rune {
	n, _ := strconv.ParseUint(string(b), 16, 16)
	return rune(n)
}

// parseTS reads an explicit ts. The zero time is refused: eventlog reads a
// zero Entry.TS as "no ts" and stamps the entry with its clock instead.
func parseTS(s string) (time.Time, error) {
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return ts, &Error{Field: TS, Err: ErrInvalidTS, Reason: fmt.Sprintf("ts %s is not an RFC 3339 time such as 2026-05-16T01:00:00Z (leave ts out to take the clock's)", quote(s))}
	}
	// At microsecond precision, as stored: a time just after the zero
	// time would be stored as it, and then not read back.
	if eventlog.NormalizeTime(ts).IsZero() {
		return ts, &Error{Field: TS, Err: ErrInvalidTS, Reason: fmt.Sprintf("ts %s is the zero time 0001-01-01T00:00:00Z, which canonlog takes for no ts and replaces with the clock's now: give a later time, or leave ts out", quote(s))}
	}
	return ts, nil
}

// typeName names the JSON type of the valid JSON value v.
func typeName(v []byte) string {
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// quote quotes s for a one-line message, cut to a readable length.
func quote(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}

// decodePlain decodes, in one pass, the entries an NDJSON file is made of:
// an object whose field names and string values hold no escape and no
// control character, valid UTF-8, whose payload is an object or array,
// and whose seq (if any) is a plain number. It reports false for anything
// else — other shapes, and every input Decode refuses — and decode then
// decides. Where it answers, it gives decode's entry (FuzzDecode holds it
// to that): encoding/json walked each line three times and spent about
// half of append --file's client time doing so.
func (f *Format) decodePlain(data []byte) (eventlog.Entry, bool) {
	var (
		e    eventlog.Entry
		seen uint16 // bit i: f.fields[i] given
	)
	i := skipJSONSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return e, false
	}
	i = skipJSONSpace(data, i+1)
	for {
		if i >= len(data) || data[i] != '"' {
			return e, false
		}
		key, end, ok := plainString(data, i)
		if !ok {
			return e, false
		}
		field := slices.Index(f.fields, string(key))
		if field < 0 || seen&(1<<field) != 0 {
			return e, false
		}
		seen |= 1 << field
		if i = skipJSONSpace(data, end); i >= len(data) || data[i] != ':' {
			return e, false
		}
		i = skipJSONSpace(data, i+1)
		switch name := f.fields[field]; name {
		case Payload:
			if end = compositeEnd(data, i); end < 0 || !json.Valid(data[i:end]) {
				return e, false
			}
			e.Payload = json.RawMessage(slices.Clone(data[i:end]))
		case Seq:
			if end = plainNumberEnd(data, i); end < 0 {
				return e, false
			}
		case Kind, TS, HostID, RolloutID, EventID:
			if i >= len(data) || data[i] != '"' {
				return e, false
			}
			var v []byte
			if v, end, ok = plainString(data, i); !ok {
				return e, false
			}
			switch name {
			case Kind:
				e.Kind = eventlog.Kind(v)
			case TS:
				ts, err := parseTS(string(v))
				if err != nil {
					return e, false
				}
				e.TS = ts
			case HostID:
				e.HostID = string(v)
			case RolloutID:
				e.RolloutID = string(v)
			case EventID:
				e.EventID = string(v)
			}
		default: // PayloadText: a string that escapes its payload's quotes
			return e, false
		}
		if i = skipJSONSpace(data, end); i >= len(data) {
			return e, false
		}
		if data[i] == '}' {
			break
		}
		if data[i] != ',' {
			return e, false
		}
		i = skipJSONSpace(data, i+1)
	}
	if skipJSONSpace(data, i+1) != len(data) || e.Payload == nil {
		return e, false
	}
	return e, true
}

func skipJSONSpace(p []byte, i int) int {
	for i < len(p) && strings.IndexByte(jsonSpace, p[i]) >= 0 {
		i++
	}
	return i
}

// plainString returns the content of the JSON string whose opening quote
// is p[i], and the index past its closing quote, when it holds no escape,
// no control character and only valid UTF-8: then its bytes are what it
// decodes to.
func plainString(p []byte, i int) ([]byte, int, bool) {
	ascii := true
	for j := i + 1; j < len(p); j++ {
		switch c := p[j]; {
		case c == '"':
			s := p[i+1 : j]
			return s, j + 1, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, 0, false
}

// compositeEnd returns the index past the object or array that starts at
// p[i], matching brackets outside strings, or -1. It does not check what
// lies between: json.Valid does.
func compositeEnd(p []byte, i int) int {
	if i >= len(p) || (p[i] != '{' && p[i] != '[') {
		return -1
	}
	depth := 0
	for j := i; j < len(p); j++ {
		switch p[j] {
		case '"':
			for j++; j < len(p) && p[j] != '"'; j++ {
				if p[j] == '\\' {
					j++
				}
			}
			if j >= len(p) {
				return -1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return j + 1
			}
		}
	}
	return -1
}

// plainNumberEnd returns the index past the digits (and an optional
// minus) that start at p[i], or -1: enough for the seqs query prints.
func plainNumberEnd(p []byte, i int) int {
	j := i
	if j < len(p) && p[j] == '-' {
		j++
	}
	start := j
	for j < len(p) && '0' <= p[j] && p[j] <= '9' {
		j++
	}
	if j == start || (p[start] == '0' && j-start > 1) {
		return -1
	}
	return j
}
