package eventlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Entry is what a caller appends.
type Entry struct {
	// Kind says what the event records. Required.
	Kind Kind
	// TS is when the event happened. A zero TS takes the log's Clock. It is
	// stored in UTC at microsecond precision; finer precision is truncated.
	TS time.Time
	// HostID and RolloutID are optional; empty is stored as NULL.
	HostID    string
	RolloutID string
	// Payload is any JSON document, stored byte for byte. Required.
	Payload json.RawMessage
	// EventID is an optional idempotency key: an entry with an EventID lands
	// once, however often it is appended.
	EventID string
}

// Event is a stored entry.
type Event struct {
	Seq       int64
	Kind      Kind
	TS        time.Time
	HostID    string
	RolloutID string
	Payload   json.RawMessage
	EventID   string
}

// maxIDBytes bounds host, rollout and event ids: they are keys in indexes.
const maxIDBytes = 512

var (
	minTS = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTS = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// prepare validates e and returns it as it will be stored: timestamp from
// clock when zero, truncated to microseconds, in UTC.
func (e Entry) prepare(index int, clock Clock, maxPayload int) (Entry, error) {
	fail := func(field string, err error) (Entry, error) {
		return Entry{}, &EntryError{Index: index, Field: field, Err: err}
	}
	if err := e.Kind.Validate(); err != nil {
		return fail("kind", err)
	}
	if err := validatePayload(e.Payload, maxPayload); err != nil {
		return fail("payload", err)
	}
	explicit := !e.TS.IsZero()
	if !explicit {
		e.TS = clock.Now()
	}
	e.TS = NormalizeTime(e.TS)
	if err := checkTS(e.TS); err != nil {
		return fail("ts", fmt.Errorf("%w: %w", ErrInvalidEntry, err))
	}
	if explicit && e.TS.IsZero() {
		// Stored, it would read back as the zero time, which means "stamp
		// with the clock": re-appending the event would change it.
		return fail("ts", fmt.Errorf("%w: %s is within a microsecond of the zero time 0001-01-01T00:00:00Z, which means \"now\": give a later time or none",
			ErrInvalidEntry, e.TS.Format(time.RFC3339Nano)))
	}
	for _, f := range []struct{ name, v string }{{"host_id", e.HostID}, {"rollout_id", e.RolloutID}, {"event_id", e.EventID}} {
		if err := checkID(f.v); err != nil {
			return fail(f.name, fmt.Errorf("%w: %w", ErrInvalidEntry, err))
		}
	}
	return e, nil
}

// Validate makes the checks an append makes of e, with a payload size
// limit of maxPayloadBytes, without touching a database: a tool reading
// entries can report a bad one where it read it rather than when its batch
// is appended. A zero TS passes (the log's clock fills it in). The error is
// an *EntryError (Index 0) naming the field; it wraps ErrInvalidKind,
// ErrInvalidPayload, ErrPayloadNUL, ErrPayloadTooLarge or ErrInvalidEntry.
func (e Entry) Validate(maxPayloadBytes int) error {
	if e.TS.IsZero() {
		e.TS = maxTS // any valid time: only the caller's own TS is checked
	}
	_, err := e.prepare(0, SystemClock{}, maxPayloadBytes)
	return err
}

// checkID says why s cannot be a host, rollout or event id, or returns
// nil. Entries and filters share it: PostgreSQL refuses text that is not
// UTF-8 or holds a NUL (SQLite would store it), so both backends refuse it
// up front, and a filter value no entry can hold is refused the same way.
func checkID(s string) error {
	switch {
	case len(s) > maxIDBytes:
		return fmt.Errorf("%d bytes, at most %d allowed", len(s), maxIDBytes)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case bytes.IndexByte([]byte(s), 0) >= 0:
		return errors.New("contains a NUL byte")
	}
	return nil
}

// checkTS says why t (normalized: UTC, microseconds) is outside the years
// both backends store, or returns nil. Entries and filters share it: the
// text timestamps are written as (FormatTime) keep time order on
// SQLite only with four-digit years, and PostgreSQL has no year 0.
func checkTS(t time.Time) error {
	if t.Before(minTS) || t.After(maxTS) {
		return fmt.Errorf("%s is outside years 0001-9999", t.Format(time.RFC3339Nano))
	}
	return nil
}

// maxPayloadDepth is how deeply a payload's arrays and objects may nest.
// SQLite's JSON functions refuse anything deeper (its event_log CHECKs
// json_valid(payload)), so a deeper payload could be appended on PostgreSQL
// and not on SQLite; the log refuses it on both, with a clear error.
const maxPayloadDepth = 1000

// ValidatePayload reports whether p is a payload the log accepts with a size
// limit of maxBytes: valid JSON, valid UTF-8, no NUL character (raw or
// escaped), arrays and objects nested at most 1000 levels deep, at most
// maxBytes long. The error wraps ErrPayloadTooLarge, ErrPayloadNUL or
// ErrInvalidPayload.
func ValidatePayload(p []byte, maxBytes int) error {
	return validatePayload(p, maxBytes)
}

func validatePayload(p []byte, maxBytes int) error {
	if len(p) > maxBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrPayloadTooLarge, len(p), maxBytes)
	}
	if len(p) == 0 {
		return fmt.Errorf("%w: empty", ErrInvalidPayload)
	}
	if bytes.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("%w: raw NUL byte at offset %d", ErrPayloadNUL, bytes.IndexByte(p, 0))
	}
	if !json.Valid(p) {
		var v any
		err := json.Unmarshal(p, &v)
		return fmt.Errorf("%w: not JSON: %v", ErrInvalidPayload, err)
	}
	if !utf8.Valid(p) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidPayload)
	}
	// p is valid JSON: a quote outside a string opens one, an unescaped
	// quote inside closes it; a backslash only occurs inside a string and
	// starts an escape whose next byte is the escaped character (\u is
	// followed by four hex digits); brackets outside strings nest.
	depth, inString := 0, false
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case inString && c == '\\':
			if p[i+1] == 'u' && i+6 <= len(p) && string(p[i+2:i+6]) == "0000" {
				return fmt.Errorf("%w: \\u0000 escape at offset %d", ErrPayloadNUL, i)
			}
			i++ // skip the escaped character
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			if depth++; depth > maxPayloadDepth {
				return fmt.Errorf("%w: arrays and objects nested deeper than %d levels (at offset %d)", ErrInvalidPayload, maxPayloadDepth, i)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

// sameContent reports whether the stored event ev records the same entry as
// e (already prepared), and if not, the first field that differs. The
// timestamp only counts when the caller set one: a retry that leaves TS to
// the clock gets a new time and is still the same event.
func sameContent(ev Event, e Entry, explicitTS bool) (bool, string) {
	switch {
	case ev.Kind != e.Kind:
		return false, "kind"
	case ev.HostID != e.HostID:
		return false, "host_id"
	case ev.RolloutID != e.RolloutID:
		return false, "rollout_id"
	case !bytes.Equal(ev.Payload, e.Payload):
		return false, "payload"
	case explicitTS && !ev.TS.Equal(e.TS):
		return false, "ts"
	}
	return true, ""
}
