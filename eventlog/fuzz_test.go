package eventlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
)

// The fuzz targets below run over their seeds and testdata/fuzz/ in every
// go test; run them for real with e.g.
//
//	go test ./eventlog -run '^$' -fuzz '^FuzzValidatePayload$' -fuzztime 10m -parallel 1

// memoryLog returns a log on a private in-memory SQLite database with the
// core migrations applied, closed when tb ends.
func memoryLog(tb testing.TB) (*sqlx.DB, *eventlog.Log) {
	tb.Helper()
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	if _, err := migrations.Up(ctx, db); err != nil {
		tb.Fatal(err)
	}
	l, err := eventlog.New(db, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	return db, l
}

// expectedPayloadError is the payload rule written out independently of
// entry.go: the sentinel ValidatePayload must return for p, or nil.
func expectedPayloadError(p []byte, maxBytes int) error {
	switch {
	case len(p) > maxBytes:
		return eventlog.ErrPayloadTooLarge
	case len(p) == 0:
		return eventlog.ErrInvalidPayload
	case bytes.IndexByte(p, 0) >= 0:
		return eventlog.ErrPayloadNUL
	case !json.Valid(p), !utf8.Valid(p):
		return eventlog.ErrInvalidPayload
	}
	// Walk the document's tokens: nesting depth, and a NUL in any decoded
	// string (key or value), which after the raw check above can only
	// come from a \u0000 escape.
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	depth, maxDepth, nul := 0, 0, false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic("json.Valid accepted what the decoder refuses: " + err.Error())
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '[' || v == '{' {
				depth++
				maxDepth = max(maxDepth, depth)
			} else {
				depth--
			}
		case string:
			nul = nul || strings.IndexByte(v, 0) >= 0
		}
	}
	switch {
	case nul && maxDepth > 1000:
		return errAnyOf{eventlog.ErrPayloadNUL, eventlog.ErrInvalidPayload}
	case nul:
		return eventlog.ErrPayloadNUL
	case maxDepth > 1000:
		return eventlog.ErrInvalidPayload
	}
	return nil
}

// errAnyOf stands for either of two sentinels: which rule a payload
// breaking two of them reports first is not part of the contract.
type errAnyOf [2]error

// short quotes p for a failure message, cut to its first 200 bytes.
func short(p []byte) string {
	if len(p) > 200 {
		return fmt.Sprintf("%q… (%d bytes)", p[:200], len(p))
	}
	return fmt.Sprintf("%q", p)
}

func (e errAnyOf) Error() string { return e[0].Error() + " or " + e[1].Error() }

func isExpected(err, want error) bool {
	if any, ok := want.(errAnyOf); ok {
		return errors.Is(err, any[0]) || errors.Is(err, any[1])
	}
	return errors.Is(err, want)
}

func FuzzValidatePayload(f *testing.F) {
	for _, p := range []string{
		`{}`, `[]`, `null`, `0`, `-0.5e+10`, `"x"`, ` {"a": [1, 2, {"b": null}]} `,
		"", " ", "\x00", `{"a":"` + "\x00" + `"}`, `"\u0000"`, `{"\u0000":1}`, `"\\u0000"`, `"\\\u0000"`,
		`"\u00000"`, `"\u0001"`, `"\ud800"`, `"\udc00\ud800"`, `"\uD83D\uDE00"`, `"\u20AC"`,
		"\"\xff\"", "\"\xed\xa0\x80\"", "\"\xc3\x28\"", "{\"k\":\"\xf0\x9f\x98\x80\"}",
		`{"a":1,"a":2}`, `1e400`, `123456789012345678901234567890`, `-`, `01`, `[1,]`, `{"a"}`, `"\x"`,
		"\"a\nb\"", "{\n \"a\": 1\r\n}", `{"a":"]]]]"}`, `{"a":"\"[[["}`,
		strings.Repeat("[", 1000) + strings.Repeat("]", 1000),
		strings.Repeat("[", 1001) + strings.Repeat("]", 1001),
		strings.Repeat(`{"a":`, 1001) + "1" + strings.Repeat("}", 1001),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		`[` + strings.Repeat(`[],`, 2000) + `[]]`,
	} {
		f.Add([]byte(p), uint16(0))
	}
	f.Add([]byte(`{"a":1}`), uint16(6))
	f.Add([]byte(`{"a":1}`), uint16(7))
	f.Add([]byte(`{"a":"\u0000"}`), uint16(5))

	db, l := memoryLog(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, p []byte, limit uint16) {
		maxBytes := eventlog.DefaultMaxPayloadBytes
		if limit > 0 {
			maxBytes = int(limit)
		}
		err := eventlog.ValidatePayload(p, maxBytes)
		want := expectedPayloadError(p, maxBytes)
		switch {
		case want == nil && err != nil:
			t.Fatalf("ValidatePayload(%s) refused a payload the rules accept: %v", short(p), err)
		case want != nil && err == nil:
			t.Fatalf("ValidatePayload(%s) accepted a payload the rules refuse (%v)", short(p), want)
		case want != nil && !isExpected(err, want):
			t.Fatalf("ValidatePayload(%s) = %v, want an error wrapping %v", short(p), err, want)
		}
		// Entry.Validate makes the same decision.
		var ee *eventlog.EntryError
		switch verr := (eventlog.Entry{Kind: eventlog.KindEffect, Payload: p}).Validate(maxBytes); {
		case (verr == nil) != (err == nil):
			t.Fatalf("Entry.Validate of payload %s = %v, ValidatePayload = %v", short(p), verr, err)
		case verr != nil && (!errors.As(verr, &ee) || ee.Field != "payload" || !isExpected(verr, want)):
			t.Fatalf("Entry.Validate of payload %s = %v, want an EntryError on payload wrapping %v", short(p), verr, want)
		}
		if limit > 0 {
			return // the log's own limit is the default
		}

		// The log agrees: it refuses with the same sentinel, or stores the
		// payload byte for byte (the CHECKs of the real schema included).
		tx, txErr := db.BeginTxx(ctx, nil)
		if txErr != nil {
			t.Fatal(txErr)
		}
		defer func() { _ = tx.Rollback() }()
		res, appendErr := l.AppendTx(ctx, tx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: p})
		if err != nil {
			if !errors.As(appendErr, &ee) || ee.Field != "payload" || !isExpected(appendErr, want) {
				t.Fatalf("AppendTx of a refused payload %s: %v, want an EntryError on payload wrapping %v", short(p), appendErr, want)
			}
			return
		}
		if appendErr != nil {
			t.Fatalf("AppendTx of an accepted payload %s: %v", short(p), appendErr)
		}
		got, qErr := l.QueryTx(ctx, tx, eventlog.Filter{AfterSeq: res[0].Event.Seq - 1, Limit: 1})
		if qErr != nil || len(got) != 1 {
			t.Fatalf("read back: %v (%d events)", qErr, len(got))
		}
		if !bytes.Equal(got[0].Payload, p) {
			t.Fatalf("payload %s stored as %s", short(p), short(got[0].Payload))
		}
	})
}

// kindPattern is the rule of the CHECK on event_log.kind in
// migrations/postgres/00001_event_log.sql.
var kindPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

func FuzzKindValidate(f *testing.F) {
	for _, k := range []string{
		"a", "agent_event", "z9", "a_", "a0_9z", "", "_a", "0a", "A", "aB", "a-b", "a b", "a\n", "\na",
		"a\x00", "\x00", "é", "aé", "a\xff", "\xff", "ａ", "a\u0130", "k", "rollout_event",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("a", 64) + "\n",
		"a$", "^a", "a.", "a*", "a'; DROP TABLE event_log; --",
	} {
		f.Add(k)
	}
	db, _ := memoryLog(f)
	ctx := context.Background()
	// The CHECK on event_log.kind in migrations/sqlite/00001_event_log.sql.
	check, err := db.PreparexContext(ctx, `SELECT length(?1) BETWEEN 1 AND 64 AND ?1 NOT GLOB '*[^a-z0-9_]*' AND substr(?1, 1, 1) BETWEEN 'a' AND 'z'`)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = check.Close() })
	f.Fuzz(func(t *testing.T, k string) {
		err := eventlog.Kind(k).Validate()
		want := kindPattern.MatchString(k)
		switch {
		case want && err != nil:
			t.Fatalf("Kind(%q).Validate() = %v, but it matches %s", k, err, kindPattern)
		case !want && err == nil:
			t.Fatalf("Kind(%q).Validate() accepted a kind that does not match %s", k, kindPattern)
		case !want && !errors.Is(err, eventlog.ErrInvalidKind):
			t.Fatalf("Kind(%q).Validate() = %v, want an error wrapping ErrInvalidKind", k, err)
		}
		// SQLite's CHECK agrees with the rule (its text functions stop at a
		// NUL, which Validate refuses before the database sees it).
		if strings.IndexByte(k, 0) >= 0 {
			return
		}
		var sqliteOK bool
		if err := check.QueryRowxContext(ctx, k).Scan(&sqliteOK); err != nil {
			t.Fatal(err)
		}
		if sqliteOK != want {
			t.Fatalf("kind %q: the SQLite CHECK says %v, the rule says %v", k, sqliteOK, want)
		}
	})
}

// TestEntryValidate: Entry.Validate refuses what an append refuses, naming
// the same field, and accepts what it accepts, without a database.
func TestEntryValidate(t *testing.T) {
	t.Parallel()
	db, l := memoryLog(t)
	ctx := context.Background()
	ok := eventlog.Entry{Kind: eventlog.KindEffect, Payload: []byte(`{}`)}
	with := func(f func(e *eventlog.Entry)) eventlog.Entry { e := ok; f(&e); return e }
	for _, tc := range []struct {
		name  string
		entry eventlog.Entry
		field string // "" when valid
		want  error
	}{
		{"valid", ok, "", nil},
		{"valid with everything", with(func(e *eventlog.Entry) {
			e.TS, e.HostID, e.RolloutID, e.EventID = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), "h", "r", strings.Repeat("e", 512)
		}), "", nil},
		{"bad kind", with(func(e *eventlog.Entry) { e.Kind = "Effect" }), "kind", eventlog.ErrInvalidKind},
		{"payload not JSON", with(func(e *eventlog.Entry) { e.Payload = []byte(`{`) }), "payload", eventlog.ErrInvalidPayload},
		{"payload NUL escape", with(func(e *eventlog.Entry) { e.Payload = []byte(`"\u0000"`) }), "payload", eventlog.ErrPayloadNUL},
		{"payload too deep", with(func(e *eventlog.Entry) { e.Payload = []byte(strings.Repeat("[", 1001) + strings.Repeat("]", 1001)) }), "payload", eventlog.ErrInvalidPayload},
		{"ts year 0", with(func(e *eventlog.Entry) { e.TS = time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC) }), "ts", eventlog.ErrInvalidEntry},
		{"ts year 10000 in UTC", with(func(e *eventlog.Entry) {
			e.TS = time.Date(9999, 12, 31, 23, 30, 0, 0, time.FixedZone("-01:00", -3600))
		}), "ts", eventlog.ErrInvalidEntry},
		{"host not UTF-8", with(func(e *eventlog.Entry) { e.HostID = "h\xff" }), "host_id", eventlog.ErrInvalidEntry},
		{"rollout with NUL", with(func(e *eventlog.Entry) { e.RolloutID = "r\x00" }), "rollout_id", eventlog.ErrInvalidEntry},
		{"event id 513 bytes", with(func(e *eventlog.Entry) { e.EventID = strings.Repeat("e", 513) }), "event_id", eventlog.ErrInvalidEntry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.entry.Validate(eventlog.DefaultMaxPayloadBytes)
			tx, txErr := db.BeginTxx(ctx, nil)
			if txErr != nil {
				t.Fatal(txErr)
			}
			defer func() { _ = tx.Rollback() }()
			_, appendErr := l.AppendTx(ctx, tx, tc.entry)
			if tc.field == "" {
				if err != nil || appendErr != nil {
					t.Fatalf("Validate = %v, AppendTx = %v; want both to accept", err, appendErr)
				}
				return
			}
			for _, got := range []error{err, appendErr} {
				var ee *eventlog.EntryError
				if !errors.As(got, &ee) || ee.Field != tc.field || !errors.Is(got, tc.want) {
					t.Fatalf("Validate = %v, AppendTx = %v; want EntryErrors on %s wrapping %v", err, appendErr, tc.field, tc.want)
				}
			}
		})
	}
}
