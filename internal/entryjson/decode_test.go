package entryjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
)

// every is a format with all the fields, as append --file reads them.
var every = MustFormat(Kind, TS, HostID, RolloutID, EventID, Payload, PayloadText, Seq)

func TestDecode(t *testing.T) {
	t.Parallel()

	t.Run("accepts", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, in string
			want     eventlog.Entry
		}{
			{"every field", `{"seq":7,"kind":"effect","ts":"2026-05-16T01:00:00.5Z","host_id":"h1","rollout_id":"r1","event_id":"e1","payload":{"a":1}}`,
				eventlog.Entry{Kind: "effect", TS: time.Date(2026, 5, 16, 1, 0, 0, 5e8, time.UTC), HostID: "h1", RolloutID: "r1", EventID: "e1", Payload: []byte(`{"a":1}`)}},
			{"payload bytes kept", "  {\"payload\" :\t[1, 2 ,3]\r\n, \"kind\":\"effect\"}\n ",
				eventlog.Entry{Kind: "effect", Payload: []byte(`[1, 2 ,3]`)}},
			{"payload escapes kept, lone surrogate included", `{"payload":{"a":"\ud800\u00e9"}}`,
				eventlog.Entry{Payload: []byte(`{"a":"\ud800\u00e9"}`)}},
			{"payload null is the JSON document null", `{"payload":null}`,
				eventlog.Entry{Payload: []byte(`null`)}},
			{"payload_text", `{"payload_text":"{\n \"a\": 1 }"}`,
				eventlog.Entry{Payload: []byte("{\n \"a\": 1 }")}},
			{"surrogate pair", `{"host_id":"\ud83d\ude00","payload":1}`,
				eventlog.Entry{HostID: "😀", Payload: []byte(`1`)}},
			{"escaped key", `{"host\u005fid":"h","payload":1}`,
				eventlog.Entry{HostID: "h", Payload: []byte(`1`)}},
			{"raw UTF-8 and escapes in text", `{"host_id":"é\u00e9\n\\","payload":1}`,
				eventlog.Entry{HostID: "éé\n\\", Payload: []byte(`1`)}},
			{"escaped backslash before u is no escape", `{"host_id":"\\ud800","payload":1}`,
				eventlog.Entry{HostID: `\ud800`, Payload: []byte(`1`)}},
			{"empty id is no id", `{"host_id":"","payload":1}`,
				eventlog.Entry{Payload: []byte(`1`)}},
			{"seq any value, ignored", `{"seq":"x","payload":1}`,
				eventlog.Entry{Payload: []byte(`1`)}},
			{"first microsecond", `{"ts":"0001-01-01T00:00:00.000001Z","payload":1}`,
				eventlog.Entry{TS: time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC), Payload: []byte(`1`)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := every.Decode([]byte(tc.in))
				require.NoError(t, err)
				require.True(t, tc.want.TS.Equal(got.TS), "ts %v, want %v", got.TS, tc.want.TS)
				got.TS, tc.want.TS = time.Time{}, time.Time{}
				require.Equal(t, tc.want, got)
			})
		}
	})

	t.Run("refuses", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, in string
			err      error
			field    string
			want     string
		}{
			{"empty", ``, ErrSyntax, "", "not valid JSON: empty"},
			{"not JSON", `{"payload":tru}`, ErrSyntax, "", "not valid JSON: invalid character '}' in literal true (expecting 'e') (at byte 15)"},
			{"cut short", `{"payload":`, ErrSyntax, "", "not valid JSON: it ends inside its JSON object (cut short?)"},
			{"raw NUL", "{\"payload\":\"\x00\"}", ErrSyntax, "", `not valid JSON: invalid character '\x00' in string literal`},
			{"two values", `{"payload":1} {}`, ErrTrailingData, "", "more than one JSON value: more at byte 15, after the object: an entry is exactly one JSON object"},
			{"garbage after", `{"payload":1}x`, ErrTrailingData, "", "more than one JSON value"},
			{"array", `[1]`, ErrNotObject, "", "not a JSON object: an entry is one object with the fields kind, ts,"},
			{"null", `null`, ErrNotObject, "", "not a JSON object"},
			{"unknown", `{"host":"h","payload":1}`, ErrUnknownField, "", `unknown field "host": the fields are kind, ts, host_id, rollout_id, event_id, payload, payload_text, seq`},
			{"upper case", `{"KIND":"effect","payload":1}`, ErrUnknownField, "", `unknown field "KIND": field names are case-sensitive (did you mean "kind"?)`},
			{"mixed case", `{"Payload":1}`, ErrUnknownField, "", `did you mean "payload"?`},
			{"long unknown key cut", `{"` + strings.Repeat("k", 1000) + `":1}`, ErrUnknownField, "", `"` + strings.Repeat("k", 64) + `"…: the fields`},
			{"key not UTF-8", "{\"kind\xff\":\"effect\",\"payload\":1}", ErrNotStorable, "", "a field name is not valid UTF-8 (byte 0xff) at byte 7: no field is spelled so"},
			{"key lone surrogate", `{"kind\ud800":"effect","payload":1}`, ErrNotStorable, "", `a field name holds the lone surrogate escape \ud800 at byte 7`},
			{"repeated kind", `{"kind":"effect","kind":"agent_event","payload":1}`, ErrDuplicateField, "kind", `field "kind" given twice (at byte 18): give each field once`},
			{"repeated payload", `{"payload":1,"payload":2}`, ErrDuplicateField, "payload", `field "payload" given twice`},
			{"repeated seq", `{"seq":1,"seq":2,"payload":1}`, ErrDuplicateField, "seq", `field "seq" given twice`},
			{"repeated key, escaped", `{"host_id":"a","host\u005fid":"b","payload":1}`, ErrDuplicateField, "host_id", `field "host_id" given twice`},
			{"payload and payload_text", `{"payload":{},"payload_text":"{}"}`, ErrDuplicateField, "payload_text", `give "payload" or "payload_text", not both`},
			{"no payload", `{"kind":"effect"}`, ErrRequired, "payload", `"payload" is required: the entry's JSON document, or "payload_text"`},
			{"host_id a number", `{"host_id":7,"payload":1}`, ErrWrongType, "host_id", `field "host_id" must be a string, not a number`},
			{"ts an object", `{"ts":{},"payload":1}`, ErrWrongType, "ts", `field "ts" must be a string, not an object`},
			{"kind null", `{"kind":null,"payload":1}`, ErrWrongType, "kind", `field "kind" must be a string, not null: leave the field out instead`},
			{"payload_text an array", `{"payload_text":[1]}`, ErrWrongType, "payload_text", `field "payload_text" must be a string, not an array`},
			{"host_id not UTF-8, at its byte", "{\"host_id\":\"a\xff\",\"payload\":1}", ErrNotStorable, "host_id", `field "host_id" is not valid UTF-8 (byte 0xff) at byte 14: it cannot be stored as given`},
			{"host_id lone surrogate, at its byte", `{"host_id":"ab\udc00","payload":1}`, ErrNotStorable, "host_id", `field "host_id" holds the lone surrogate escape \udc00 at byte 15: it cannot be stored as given`},
			{"event_id a boolean", `{"event_id":true,"payload":1}`, ErrWrongType, "event_id", `not a boolean`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := every.Decode([]byte(tc.in))
				requireRefusal(t, err, tc.err, tc.field, tc.want)
			})
		}
	})

	t.Run("text fields are stored as given or refused", func(t *testing.T) {
		t.Parallel()
		for _, field := range []string{Kind, TS, HostID, RolloutID, EventID, PayloadText} {
			for _, tc := range []struct{ name, value, want string }{
				{"invalid UTF-8", "\"a\xff\"", `is not valid UTF-8 (byte 0xff) at byte`},
				{"truncated UTF-8", "\"\xc3\"", `is not valid UTF-8 (byte 0xc3)`},
				{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", `is not valid UTF-8 (byte 0xed)`},
				{"lone high surrogate", `"\ud800"`, `holds the lone surrogate escape \ud800 at byte`},
				{"lone low surrogate", `"x\uDC00"`, `holds the lone surrogate escape \uDC00`},
				{"high then non-surrogate", `"\ud800\u0041"`, `holds the lone surrogate escape \ud800`},
				{"high then high", `"\ud800\ud800\udc00"`, `holds the lone surrogate escape \ud800`},
				{"pair reversed", `"\udc00\ud800"`, `holds the lone surrogate escape \udc00`},
				{"high at the end", `"ok\ud83d"`, `holds the lone surrogate escape \ud83d`},
			} {
				t.Run(field+"/"+tc.name, func(t *testing.T) {
					in := `{"` + field + `":` + tc.value + `}`
					if field != PayloadText {
						in = `{"` + field + `":` + tc.value + `,"payload":{}}`
					}
					_, err := every.Decode([]byte(in))
					requireRefusal(t, err, ErrNotStorable, field, `field "`+field+`" `+tc.want)
					require.Contains(t, err.Error(), "it cannot be stored as given")
				})
			}
		}
	})

	t.Run("ts", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ ts, want string }{
			{"", `ts "" is not an RFC 3339 time`},
			{"yesterday", `ts "yesterday" is not an RFC 3339 time such as 2026-05-16T01:00:00Z`},
			{"2026-02-30T00:00:00Z", `ts "2026-02-30T00:00:00Z" is not an RFC 3339 time`},
			{"0001-01-01T00:00:00Z", `ts "0001-01-01T00:00:00Z" is the zero time 0001-01-01T00:00:00Z, which canonlog takes for no ts`},
			{"0001-01-01T02:00:00+02:00", `ts "0001-01-01T02:00:00+02:00" is the zero time`},
			{"0001-01-01T00:00:00.000000999Z", `is the zero time`},
		} {
			t.Run(tc.ts, func(t *testing.T) {
				_, err := every.Decode([]byte(`{"ts":"` + tc.ts + `","payload":{}}`))
				requireRefusal(t, err, ErrInvalidTS, TS, tc.want)
			})
		}
	})

	t.Run("format's own fields only", func(t *testing.T) {
		t.Parallel()
		agent := MustFormat(HostID, RolloutID, EventID, TS, Payload)
		_, err := agent.Decode([]byte(`{"host_id":"h","kind":"effect","payload":{}}`))
		requireRefusal(t, err, ErrUnknownField, "", `unknown field "kind": the fields are host_id, rollout_id, event_id, ts, payload`)
		_, err = agent.Decode([]byte(`{"host_id":"h"}`))
		requireRefusal(t, err, ErrRequired, Payload, `"payload" is required: the entry's JSON document`)
		require.NotContains(t, err.Error(), "payload_text", "a format without payload_text does not offer it")
	})
}

// requireRefusal checks that err is an *Error wrapping sentinel about
// field, on one line, containing want.
func requireRefusal(t *testing.T, err error, sentinel error, field, want string) {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, sentinel)
	var fe *Error
	require.True(t, errors.As(err, &fe), "%T is not an *Error", err)
	require.Equal(t, field, fe.Field)
	require.Contains(t, err.Error(), want)
	require.NotContains(t, err.Error(), "\n")
}

func TestNewFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fields []string
		want   string
	}{
		{[]string{Kind, "host", Payload}, `unknown field "host"`},
		{[]string{Payload, Kind, Payload}, `field "payload" listed twice`},
		{[]string{Kind}, "needs the payload field"},
	} {
		_, err := NewFormat(tc.fields...)
		require.ErrorContains(t, err, tc.want)
		require.Panics(t, func() { MustFormat(tc.fields...) })
	}
}

// FuzzDecode checks what holds for any input: a refusal is an *Error on
// one line; an accepted input is valid JSON, its payload is the input's
// own bytes (or payload_text's text), and no text field holds a U+FFFD
// the input did not write.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"kind":"effect","ts":"2026-05-16T01:00:00Z","host_id":"h","rollout_id":"r","event_id":"e","payload":{"a":[1,"\ud800"]},"seq":1}`,
		`{"payload_text":"{\"a\": 1}\n"}`,
		"{\"host_id\":\"\xff\",\"payload\":1}",
		`{"host_id":"\ud800","payload":1}`,
		`{"host_id":"\ufffd","payload":1}`,
		"{\"host_id\":\"\xef\xbf\xbd\",\"payload\":1}",
		`{"host_id":"\ud83d\ude00","payload":1}`,
		`{"HOST_ID":"h","payload":1}`,
		`{"kind":"a","kind":"b","payload":1}`,
		`{"ts":"0001-01-01T00:00:00Z","payload":1}`,
		`{"payload":null}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	for _, s := range plainLines {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The one-pass decoder answers only with the reference's entry.
		if plain, ok := every.decodePlain(data); ok {
			ref, err := every.decode(data)
			if err != nil || !reflect.DeepEqual(plain, ref) {
				t.Fatalf("decodePlain(%q) = %#v; decode says %#v, %v", data, plain, ref, err)
			}
		}
		e, err := every.Decode(data)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) || strings.ContainsAny(err.Error(), "\r\n") || err.Error() == "" {
				t.Fatalf("Decode(%q): error %q (%T) is not a one-line *Error", data, err, err)
			}
			return
		}
		if !bytes.Contains(data, e.Payload) && !bytes.Contains(data, []byte(`"payload_text"`)) {
			t.Fatalf("Decode(%q): payload %q is not the input's bytes", data, e.Payload)
		}
		wroteFFFD := bytes.Contains(data, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(data), []byte(`\ufffd`))
		for _, s := range []string{string(e.Kind), e.HostID, e.RolloutID, e.EventID} {
			if !utf8.ValidString(s) {
				t.Fatalf("Decode(%q): field %q is not valid UTF-8", data, s)
			}
		}
		// A replacement is the encoded U+FFFD; raw bytes that are not UTF-8
		// (which ContainsRune would also report) pass through the payload
		// untouched, for eventlog.ValidatePayload to refuse at append.
		for _, s := range []string{string(e.Kind), e.HostID, e.RolloutID, e.EventID, string(e.Payload)} {
			if strings.Contains(s, "\uFFFD") && !wroteFFFD {
				t.Fatalf("Decode(%q): %q holds a U+FFFD the input did not write", data, s)
			}
		}
	})
}

// plainLines are lines as canonlog gen and query -o ndjson write them:
// the one-pass decoder takes them.
var plainLines = []string{
	`{"ts":"2026-05-16T00:00:00.2Z","kind":"agent_event","host_id":"host-00170","rollout_id":"rollout-001","event_id":"gen/1/2","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}}`,
	`{"seq":7,"ts":"2026-05-16T01:00:00Z","kind":"effect","host_id":"h1","payload":{"note":"Neustart nach Konfigurationsänderung","esc":"a\"b\\c\u00e9","n":[1,2.5e3,true,null]}}`,
	" \t{ \"kind\" : \"effect\" , \"payload\" : [ ] }\r\n",
	`{"kind":"effect","payload":{"nested":{"deeper":[[{}]]}},"event_id":"ünï/1"}`,
}

func TestDecodePlain(t *testing.T) {
	t.Parallel()
	for _, line := range plainLines {
		plain, ok := every.decodePlain([]byte(line))
		require.True(t, ok, line)
		ref, err := every.decode([]byte(line))
		require.NoError(t, err, line)
		require.Equal(t, ref, plain, line)
	}
	// What it leaves to encoding/json: escapes in names and values, other
	// value types, payload_text, anything Decode refuses.
	for _, line := range []string{
		`{"kind":"eff\u0065ct","payload":{}}`,
		`{"k\u0069nd":"effect","payload":{}}`,
		`{"kind":"effect","payload":"text"}`,
		`{"kind":"effect","payload":1}`,
		`{"payload_text":"{}"}`,
		`{"seq":1.5,"payload":{}}`,
		"{\"host_id\":\"\xff\",\"payload\":{}}",
		`{"kind":"effect","payload":{}} {}`,
		`{"kind":"effect","payload":{"a":}}`,
		`{"kind":"a","kind":"b","payload":{}}`,
		`{"KIND":"a","payload":{}}`,
		`{"payload":{}`,
		`{}`,
		`{"ts":"yesterday","payload":{}}`,
	} {
		_, ok := every.decodePlain([]byte(line))
		require.False(t, ok, line)
	}
}

func TestObject(t *testing.T) {
	t.Parallel()
	fields := []string{"decision", "read_seq"}
	in := []byte(` {"read_seq": 7, "decision":"halt"}`)
	var keys, values []string
	require.NoError(t, Object(in, "a gate decision", fields, func(key string, v json.RawMessage, at int64) error {
		keys, values = append(keys, key), append(values, string(in[at:at+int64(len(v))]))
		return nil
	}))
	require.Equal(t, []string{"read_seq", "decision"}, keys, "in the input's order")
	require.Equal(t, []string{`7`, `"halt"`}, values, "at the offsets given")

	stop := errors.New("stop")
	calls := 0
	err := Object(in, "a gate decision", fields, func(string, json.RawMessage, int64) error { calls++; return stop })
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls, "a refusal ends the walk")

	for _, tc := range []struct{ in, want string }{
		{`[1]`, "not a JSON object: a gate decision is one object with the fields decision, read_seq"},
		{`{} {}`, "a gate decision is exactly one JSON object"},
		{`{"Decision":"halt"}`, `(did you mean "decision"?)`},
		{`{"decision":"halt","decision":"advance"}`, `field "decision" given twice`},
	} {
		err := Object([]byte(tc.in), "a gate decision", fields, func(string, json.RawMessage, int64) error { return nil })
		var e *Error
		require.ErrorAs(t, err, &e, tc.in)
		require.Contains(t, e.Reason, tc.want)
	}

	s, err := String("decision", json.RawMessage(`"h\u0061lt"`), 0)
	require.NoError(t, err)
	require.Equal(t, "halt", s)
	_, err = String("decision", json.RawMessage(`"\ud800"`), 12)
	require.ErrorIs(t, err, ErrNotStorable)
	require.ErrorContains(t, err, "at byte 14")
	_, err = String("decision", json.RawMessage(`1`), 0)
	require.ErrorIs(t, err, ErrWrongType)
}
