package canonlogcli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/entryjson"
)

// hostileSeed is what the log holds before the hostile input: two events,
// one of them a failing probe result with a probe_failures row.
const hostileSeed = `{"kind":"effect","host_id":"h1","payload":{"n":1}}
{"kind":"agent_event","host_id":"h1","rollout_id":"r1","event_id":"h1/1","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}}
`

// lineOfLength returns an NDJSON line of exactly n bytes.
func lineOfLength(n int) string {
	const head, tail = `{"kind":"effect","payload_text":"`, `"}`
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

// logState is what hostile input must leave unchanged.
type logState struct {
	Events, MaxSeq, ProbeRows int
}

func (c *cli) state() logState {
	c.t.Helper()
	var s logState
	db := c.db()
	require.NoError(c.t, db.Get(&s.Events, `SELECT COUNT(*) FROM event_log`))
	require.NoError(c.t, db.Get(&s.MaxSeq, `SELECT COALESCE(MAX(seq), 0) FROM event_log`))
	require.NoError(c.t, db.Get(&s.ProbeRows, `SELECT COUNT(*) FROM probe_failures`))
	return s
}

// TestHostileInput runs the real binary on each backend with one hostile
// input per row. Each must fail with a one-line message on stderr naming
// the problem, exit 2 when a flag or argument is wrong and 1 when input
// read from a file is (docs/cli.md), never panic, and write nothing: the
// event count, the last seq and probe_failures stay as they were.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	files := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(files, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		return path
	}
	line := func(payload string) string { return `{"kind":"effect","payload":` + payload + "}\n" }
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	good := `{"kind":"agent_event","host_id":"h2","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C9","framework":"cis","status":"fail"}]}}` + "\n"
	overLimit := `"` + strings.Repeat("x", eventlog.DefaultMaxPayloadBytes-1) + `"` // 1 byte over the limit

	// What was refused (the offending byte counts are in the messages).
	rows := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"payload flag not UTF-8", "", []string{"append", "--kind", "effect", "--payload", "{\"a\":\"\xff\xfe\"}"}, 2, "--payload: invalid payload: not valid UTF-8"},
		{"payload file line not UTF-8", "", []string{"append", "--file", file("utf8.ndjson", line("{\"a\":\"\xc3\x28\"}"))}, 1, "line 1: payload: invalid payload: not valid UTF-8; nothing was appended"},
		{"payload flag NUL escape", "", []string{"append", "--kind", "effect", "--payload", `{"a":"x\u0000"}`}, 2, `--payload: payload contains a NUL character: \u0000 escape at offset 7`},
		{"payload flag raw NUL from @file", "", []string{"append", "--kind", "effect", "--payload", "@" + file("nul.json", "{\"a\":\"\x00\"}")}, 2, "--payload: payload contains a NUL character: raw NUL byte at offset 6"},
		{"payload file NUL escape", "", []string{"append", "--file", file("nul-escape.ndjson", line(`{"a":"\u0000"}`))}, 1, `line 1: payload: payload contains a NUL character: \u0000 escape`},
		{"payload file raw NUL", "", []string{"append", "--file", file("nul-raw.ndjson", line("{\"a\":\"\x00\"}"))}, 1, `line 1: not valid JSON: invalid character '\x00' in string literal`},
		{"payload stdin raw NUL", "{\"kind\":\"effect\",\"payload\":\"\x00\"}\n", []string{"append", "--file", "-"}, 1, "append from standard input: line 1: not valid JSON"},
		{"payload flag nested 100000 deep", "", []string{"append", "--kind", "effect", "--payload", "@" + file("deep.json", deep(100000))}, 2, "--payload: invalid payload: not JSON: invalid character '[' exceeded max depth"},
		{"payload file nested 100000 deep", "", []string{"append", "--file", file("deep.ndjson", line(deep(100000)))}, 1, "line 1: not valid JSON: invalid character '[' exceeded max depth"},
		{"payload flag nested 1001 deep", "", []string{"append", "--kind", "effect", "--payload", deep(1001)}, 2, "--payload: invalid payload: arrays and objects nested deeper than 1000 levels"},
		{"payload file nested 1001 deep", "", []string{"append", "--file", file("deep1001.ndjson", good+line(deep(1001)))}, 1, "line 2: payload: invalid payload: arrays and objects nested deeper than 1000 levels"},
		{"file line of 10 MB", "", []string{"append", "--file", file("huge.ndjson", good+line(`"`+strings.Repeat("x", 10<<20)+`"`))}, 1, "line 2: longer than 2162688 bytes (payloads are limited to 1048576)"},
		{"file line 1 byte over the line limit", "", []string{"append", "--file", file("long-line.ndjson", good+lineOfLength(maxLineBytes+1)+"\n")}, 1, "line 2: longer than 2162688 bytes"},
		{"file payload 1 byte over the limit", "", []string{"append", "--file", file("over.ndjson", good+line(overLimit))}, 1, "line 2: payload: payload too large: 1048577 bytes, the limit is 1048576"},
		{"payload flag 1 byte over the limit", "", []string{"append", "--kind", "effect", "--payload", "@" + file("over.json", overLimit)}, 2, "--payload: payload too large: 1048577 bytes, the limit is 1048576"},
		{"batch whose last line is bad", "", []string{"append", "--file", file("last-bad.ndjson", good+good+line(`{}`)+`{"kind":"effect","payload":{}`+"\n")}, 1, "line 4: not valid JSON: it ends inside its JSON object (cut short?)"},
		{"batch whose last line reuses an event id", "", []string{"append", "--file", file("last-conflict.ndjson", good+`{"kind":"effect","event_id":"h1/1","payload":{}}`+"\n")}, 1, `line 2: event id "h1/1" is already used by event 2 with a different kind`},
		{"batch whose last line is a malformed probe result", "", []string{"append", "--file", file("last-probe.ndjson", good+`{"kind":"agent_event","host_id":"h3","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"framework":"cis","status":"fail"}]}}`+"\n")}, 1, "line 2: refused by probe_failures: invalid probe result: sub_results[0].control_id"},
		{"append bad kind", "", []string{"append", "--kind", "Agent-Event", "--payload", "{}"}, 2, `--kind: invalid kind: "Agent-Event" does not match ^[a-z][a-z0-9_]{0,63}$`},
		{"append kind with SQL", "", []string{"append", "--kind", "x'; DROP TABLE event_log; --", "--payload", "{}"}, 2, "--kind: invalid kind"},
		{"file bad kind", "", []string{"append", "--file", file("kind.ndjson", good+`{"kind":"effect ","payload":{}}`+"\n")}, 1, `line 2: kind: invalid kind: "effect "`},
		{"query bad kind", "", []string{"query", "--kind", "effect,BAD"}, 2, `--kind: invalid kind: "BAD"`},
		{"tail empty kind", "", []string{"tail", "--kind", ""}, 2, "--kind is empty"},
		{"query kind list with an empty kind", "", []string{"query", "--kind", "effect,"}, 2, `--kind: invalid kind: ""`},
		{"host id not UTF-8", "", []string{"append", "--kind", "effect", "--host", "h\xff", "--payload", "{}"}, 2, "--host: invalid entry: not valid UTF-8"},
		{"host id over 512 bytes", "", []string{"append", "--kind", "effect", "--host", strings.Repeat("h", 513), "--payload", "{}"}, 2, "--host: invalid entry: 513 bytes, at most 512 allowed"},
		{"file event id with NUL", "", []string{"append", "--file", file("id-nul.ndjson", `{"kind":"effect","event_id":"e\u0000","payload":{}}`+"\n")}, 1, "line 1: event_id: invalid entry: contains a NUL byte"},
		{"file rollout id over 512 bytes", "", []string{"append", "--file", file("id-long.ndjson", good+`{"kind":"effect","rollout_id":"`+strings.Repeat("r", 600)+`","payload":{}}`+"\n")}, 1, "line 2: rollout_id: invalid entry: 600 bytes, at most 512 allowed"},
		// What encoding/json would store other than as written (U+FFFD
		// for text, the clock's now for the zero ts, the last of repeated
		// keys, a key of another case): refused, never substituted.
		{"file host id not UTF-8", "", []string{"append", "--file", file("host-utf8.ndjson", good+"{\"kind\":\"effect\",\"host_id\":\"h\xff\",\"payload\":{}}\n")}, 1, `line 2: field "host_id" is not valid UTF-8 (byte 0xff) at byte 30: it cannot be stored as given; nothing was appended`},
		{"stdin host id not UTF-8", "{\"kind\":\"effect\",\"host_id\":\"h\xff\",\"payload\":{}}\n", []string{"append", "--file", "-"}, 1, `append from standard input: line 1: field "host_id" is not valid UTF-8`},
		{"file rollout id cut UTF-8", "", []string{"append", "--file", file("rollout-utf8.ndjson", "{\"kind\":\"effect\",\"rollout_id\":\"r\xc3\",\"payload\":{}}\n")}, 1, `line 1: field "rollout_id" is not valid UTF-8 (byte 0xc3)`},
		{"file event id UTF-8 surrogate", "", []string{"append", "--file", file("event-utf8.ndjson", "{\"kind\":\"effect\",\"event_id\":\"\xed\xa0\x80\",\"payload\":{}}\n")}, 1, `line 1: field "event_id" is not valid UTF-8 (byte 0xed)`},
		{"file kind not UTF-8", "", []string{"append", "--file", file("kind-utf8.ndjson", "{\"kind\":\"effect\xff\",\"payload\":{}}\n")}, 1, `line 1: field "kind" is not valid UTF-8`},
		{"file ts not UTF-8", "", []string{"append", "--file", file("ts-utf8.ndjson", "{\"kind\":\"effect\",\"ts\":\"2026-05-16T01:00:00Z\xff\",\"payload\":{}}\n")}, 1, `line 1: field "ts" is not valid UTF-8`},
		{"file host id lone surrogate", "", []string{"append", "--file", file("host-surrogate.ndjson", good+`{"kind":"effect","host_id":"h\ud800","payload":{}}`+"\n")}, 1, `line 2: field "host_id" holds the lone surrogate escape \ud800 at byte 30: it cannot be stored as given`},
		{"file rollout id lone low surrogate", "", []string{"append", "--file", file("rollout-surrogate.ndjson", `{"kind":"effect","rollout_id":"\udc00","payload":{}}`+"\n")}, 1, `line 1: field "rollout_id" holds the lone surrogate escape \udc00`},
		{"file event id unpaired high surrogate", "", []string{"append", "--file", file("event-surrogate.ndjson", `{"kind":"effect","event_id":"\ud800\u0041","payload":{}}`+"\n")}, 1, `line 1: field "event_id" holds the lone surrogate escape \ud800`},
		{"file kind lone surrogate", "", []string{"append", "--file", file("kind-surrogate.ndjson", `{"kind":"\ud800","payload":{}}`+"\n")}, 1, `line 1: field "kind" holds the lone surrogate escape`},
		{"file ts lone surrogate", "", []string{"append", "--file", file("ts-surrogate.ndjson", `{"kind":"effect","ts":"\ud800","payload":{}}`+"\n")}, 1, `line 1: field "ts" holds the lone surrogate escape`},
		{"file payload_text lone surrogate", "", []string{"append", "--file", file("text-surrogate.ndjson", `{"kind":"effect","payload_text":"\"\ud800\""}`+"\n")}, 1, `line 1: field "payload_text" holds the lone surrogate escape \ud800`},
		{"file ts zero", "", []string{"append", "--file", file("ts-zero.ndjson", good+`{"kind":"effect","ts":"0001-01-01T00:00:00Z","payload":{}}`+"\n")}, 1, `line 2: ts "0001-01-01T00:00:00Z" is the zero time 0001-01-01T00:00:00Z, which canonlog takes for no ts`},
		{"file ts zero in another zone", "", []string{"append", "--file", file("ts-zero-zone.ndjson", `{"kind":"effect","ts":"0001-01-01T05:30:00+05:30","payload":{}}`+"\n")}, 1, `line 1: ts "0001-01-01T05:30:00+05:30" is the zero time`},
		{"file ts stored as zero", "", []string{"append", "--file", file("ts-zero-ns.ndjson", `{"kind":"effect","ts":"0001-01-01T00:00:00.000000999Z","payload":{}}`+"\n")}, 1, `line 1: ts "0001-01-01T00:00:00.000000999Z" is the zero time`},
		{"file ts empty", "", []string{"append", "--file", file("ts-empty.ndjson", `{"kind":"effect","ts":"","payload":{}}`+"\n")}, 1, `line 1: ts "" is not an RFC 3339 time`},
		{"file kind twice", "", []string{"append", "--file", file("kind-twice.ndjson", good+`{"kind":"effect","kind":"agent_event","payload":{}}`+"\n")}, 1, `line 2: field "kind" given twice (at byte 18): give each field once`},
		{"file host id twice", "", []string{"append", "--file", file("host-twice.ndjson", `{"kind":"effect","host_id":"a","host_id":"b","payload":{}}`+"\n")}, 1, `line 1: field "host_id" given twice`},
		{"file payload twice", "", []string{"append", "--file", file("payload-twice.ndjson", `{"kind":"effect","payload":{"a":1},"payload":{"a":2}}`+"\n")}, 1, `line 1: field "payload" given twice`},
		{"file upper-case key", "", []string{"append", "--file", file("key-upper.ndjson", good+`{"KIND":"effect","payload":{}}`+"\n")}, 1, `line 2: unknown field "KIND": field names are case-sensitive (did you mean "kind"?)`},
		{"file mixed-case key", "", []string{"append", "--file", file("key-mixed.ndjson", `{"kind":"effect","Host_Id":"h","payload":{}}`+"\n")}, 1, `line 1: unknown field "Host_Id": field names are case-sensitive (did you mean "host_id"?)`},
		{"file host id null", "", []string{"append", "--file", file("host-null.ndjson", `{"kind":"effect","host_id":null,"payload":{}}`+"\n")}, 1, `line 1: field "host_id" must be a string, not null: leave the field out instead`},
		{"query limit beyond int64", "", []string{"query", "--limit", "99999999999999999999"}, 2, `invalid argument "99999999999999999999" for "--limit" flag`},
		{"tail lines beyond int64", "", []string{"tail", "--lines", "99999999999999999999"}, 2, `invalid argument "99999999999999999999" for "-n, --lines" flag`},
		{"query after -1", "", []string{"query", "--after", "-1"}, 2, "--after is -1, must not be negative"},
		{"query after -5", "", []string{"query", "--after", "-5"}, 2, "--after is -5, must not be negative"},
		{"tail after -1", "", []string{"tail", "--after", "-1"}, 2, "--after is -1, must not be negative"},
		{"query limit -1", "", []string{"query", "--limit", "-1"}, 2, "--limit is -1"},
		{"tail lines -1", "", []string{"tail", "-n", "-1"}, 2, "--lines is -1, must not be negative"},
		{"ts not a time", "", []string{"append", "--kind", "effect", "--payload", "{}", "--ts", "yesterday"}, 2, `--ts "yesterday" is not an RFC 3339 time`},
		{"ts month 13", "", []string{"append", "--kind", "effect", "--payload", "{}", "--ts", "2026-13-01T00:00:00Z"}, 2, `--ts "2026-13-01T00:00:00Z" is not an RFC 3339 time`},
		{"ts the zero time", "", []string{"append", "--kind", "effect", "--payload", "{}", "--ts", "0001-01-01T00:00:00Z"}, 2, `--ts 0001-01-01T00:00:00Z is the zero time, which means "now"`},
		{"ts within a microsecond of the zero time", "", []string{"append", "--kind", "effect", "--payload", "{}", "--ts", "0001-01-01T00:00:00.0000001Z"}, 2, "--ts: invalid entry: 0001-01-01T00:00:00Z is within a microsecond of the zero time"},
		{"ts year 0000", "", []string{"append", "--kind", "effect", "--payload", "{}", "--ts", "0000-06-01T00:00:00Z"}, 2, "--ts: invalid entry: 0000-06-01T00:00:00Z is outside years 0001-9999"},
		{"ts past year 9999 in UTC", "", []string{"append", "--kind", "effect", "--payload", "{}", "--ts", "9999-12-31T23:30:00-01:00"}, 2, "--ts: invalid entry: 10000-01-01T00:30:00Z is outside years 0001-9999"},
		{"file ts not a time", "", []string{"append", "--file", file("ts.ndjson", good+`{"kind":"effect","ts":"2026-02-30T00:00:00Z","payload":{}}`+"\n")}, 1, `line 2: ts "2026-02-30T00:00:00Z" is not an RFC 3339 time`},
		{"file ts year 0000", "", []string{"append", "--file", file("ts0.ndjson", good+`{"kind":"effect","ts":"0000-01-01T00:00:00Z","payload":{}}`+"\n")}, 1, "line 2: ts: invalid entry: 0000-01-01T00:00:00Z is outside years 0001-9999"},
		{"file ts a number", "", []string{"append", "--file", file("tsnum.ndjson", `{"kind":"effect","ts":1747357200,"payload":{}}`+"\n")}, 1, `line 1: field "ts" must be a string`},
		{"query since not a time", "", []string{"query", "--since", "2026-05-16"}, 2, `--since "2026-05-16" is not an RFC 3339 time`},
		{"tail until not after since", "", []string{"tail", "--since", "2026-05-16T00:00:00Z", "--until", "2026-05-15T00:00:00Z"}, 2, "--until (2026-05-15T00:00:00Z) must be after --since (2026-05-16T00:00:00Z)"},
	}

	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		u := newUser(t, c.url)
		u.ok("", "migrate", "up")
		u.ok(hostileSeed, "append", "--file", "-")
		before := c.state()
		require.Equal(t, logState{Events: 2, MaxSeq: 2, ProbeRows: 1}, before)
		for _, tc := range rows {
			t.Run(tc.name, func(t *testing.T) {
				r := u.run(tc.stdin, tc.args...)
				all := r.out + r.err
				require.Equal(t, tc.code, r.code, "stderr %q", r.err)
				require.Contains(t, r.err, "canonlog: ")
				require.Contains(t, r.err, tc.want)
				require.NotContains(t, all, "panic:")
				require.NotContains(t, all, "goroutine ")
				msg := withoutHint(r.err)
				require.Equal(t, 1, strings.Count(msg, "\n"), "stderr is not one line: %q", r.err)
				require.Equal(t, before, c.state(), "something was written")
			})
		}
	})
}

// TestHostileIDsWithSQLStoredVerbatim: host, rollout and event ids holding
// SQL metacharacters are values like any other: stored byte for byte,
// found again by the filters, and the tables are untouched.
func TestHostileIDsWithSQLStoredVerbatim(t *testing.T) {
	t.Parallel()
	const (
		host    = `x'; DROP TABLE event_log; --`
		rollout = `r" OR 1=1; DELETE FROM probe_failures; /*`
		eventID = `e'); DROP TABLE probe_failures; SELECT ('`
	)
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		u := newUser(t, c.url)
		u.ok("", "migrate", "up")
		u.ok(hostileSeed, "append", "--file", "-")
		probe := `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}`
		out := u.ok("", "append", "--kind", "agent_event", "--host", host, "--rollout", rollout, "--event-id", eventID, "--payload", probe)
		require.Contains(t, out, "seq 3")
		// Through --file too, with the ids escaped in JSON.
		out = u.ok(`{"kind":"effect","host_id":"x'; DROP TABLE event_log; --","rollout_id":"r\" OR 1=1; DELETE FROM probe_failures; /*","event_id":"e2'; --","payload":{}}`+"\n", "append", "--file", "-")
		require.Contains(t, out, "line 1: seq 4")
		// Appending the first again is a duplicate: the event id matched verbatim.
		out = u.ok("", "append", "--kind", "agent_event", "--host", host, "--rollout", rollout, "--event-id", eventID, "--payload", probe)
		require.Contains(t, out, "seq 3 duplicate")

		require.Equal(t, logState{Events: 4, MaxSeq: 4, ProbeRows: 2}, c.state(), "both tables still there, nothing deleted")
		var stored struct {
			Host    string `db:"host_id"`
			Rollout string `db:"rollout_id"`
			EventID string `db:"event_id"`
		}
		require.NoError(t, c.db().Get(&stored, c.db().Rebind(`SELECT host_id, rollout_id, event_id FROM event_log WHERE seq = ?`), 3))
		require.Equal(t, host, stored.Host)
		require.Equal(t, rollout, stored.Rollout)
		require.Equal(t, eventID, stored.EventID)

		require.Equal(t, []int64{3, 4}, ndjsonSeqs(t, u.ok("", "query", "--host", host, "-o", "ndjson")))
		require.Equal(t, []int64{3, 4}, ndjsonSeqs(t, u.ok("", "query", "--rollout", rollout, "-o", "ndjson")))
		require.Equal(t, []int64{3, 4}, ndjsonSeqs(t, u.ok("", "tail", "--host", host, "-o", "ndjson")))
		require.Empty(t, ndjsonSeqs(t, u.ok("", "query", "--host", "x' OR '1'='1", "-o", "ndjson")))
		// The ids round-trip through query output and append --file: to
		// the same log, every line is a duplicate.
		export := u.ok("", "query", "--host", host, "-o", "ndjson")
		require.Contains(t, u.ok(export, "append", "--file", "-"), "appended 0 new events (seqs none), 2 duplicates")
		require.Equal(t, logState{Events: 4, MaxSeq: 4, ProbeRows: 2}, c.state())
	})
}

// TestParseEntryLineNeverSubstitutes: a line whose fields would be stored
// other than as written is refused with the reason, naming the field; what
// is accepted is exactly what the line says.
func TestParseEntryLineNeverSubstitutes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, line string
		err        error
		want       string
	}{
		{"host id not UTF-8", "{\"kind\":\"effect\",\"host_id\":\"h\xff\",\"payload\":{}}", entryjson.ErrNotStorable, `field "host_id" is not valid UTF-8`},
		{"rollout id not UTF-8", "{\"kind\":\"effect\",\"rollout_id\":\"\xc3(\",\"payload\":{}}", entryjson.ErrNotStorable, `field "rollout_id" is not valid UTF-8`},
		{"event id not UTF-8", "{\"kind\":\"effect\",\"event_id\":\"\xed\xa0\x80\",\"payload\":{}}", entryjson.ErrNotStorable, `field "event_id" is not valid UTF-8`},
		{"kind not UTF-8", "{\"kind\":\"effect\xff\",\"payload\":{}}", entryjson.ErrNotStorable, `field "kind" is not valid UTF-8`},
		{"ts not UTF-8", "{\"kind\":\"effect\",\"ts\":\"\xff\",\"payload\":{}}", entryjson.ErrNotStorable, `field "ts" is not valid UTF-8`},
		{"payload_text not UTF-8", "{\"kind\":\"effect\",\"payload_text\":\"\\\"\xff\\\"\"}", entryjson.ErrNotStorable, `field "payload_text" is not valid UTF-8`},
		{"host id lone surrogate", `{"kind":"effect","host_id":"\ud800","payload":{}}`, entryjson.ErrNotStorable, `field "host_id" holds the lone surrogate escape \ud800`},
		{"rollout id lone surrogate", `{"kind":"effect","rollout_id":"a\uDFFF","payload":{}}`, entryjson.ErrNotStorable, `field "rollout_id" holds the lone surrogate escape \uDFFF`},
		{"event id lone surrogate", `{"kind":"effect","event_id":"\udbff\ud800","payload":{}}`, entryjson.ErrNotStorable, `field "event_id" holds the lone surrogate escape \udbff`},
		{"kind lone surrogate", `{"kind":"\ud800","payload":{}}`, entryjson.ErrNotStorable, `field "kind" holds the lone surrogate escape`},
		{"ts lone surrogate", `{"kind":"effect","ts":"\ud800","payload":{}}`, entryjson.ErrNotStorable, `field "ts" holds the lone surrogate escape`},
		{"payload_text lone surrogate", `{"kind":"effect","payload_text":"\"\ud800\""}`, entryjson.ErrNotStorable, `field "payload_text" holds the lone surrogate escape`},
		{"ts zero", `{"kind":"effect","ts":"0001-01-01T00:00:00Z","payload":{}}`, entryjson.ErrInvalidTS, "is the zero time"},
		{"ts zero in another zone", `{"kind":"effect","ts":"0001-01-01T01:00:00+01:00","payload":{}}`, entryjson.ErrInvalidTS, "is the zero time"},
		{"ts stored as zero", `{"kind":"effect","ts":"0001-01-01T00:00:00.0000001Z","payload":{}}`, entryjson.ErrInvalidTS, "is the zero time"},
		{"ts empty", `{"kind":"effect","ts":"","payload":{}}`, entryjson.ErrInvalidTS, `ts "" is not an RFC 3339 time`},
		{"kind twice", `{"kind":"effect","kind":"agent_event","payload":{}}`, entryjson.ErrDuplicateField, `field "kind" given twice`},
		{"payload twice", `{"kind":"effect","payload":1,"payload":2}`, entryjson.ErrDuplicateField, `field "payload" given twice`},
		{"seq twice", `{"seq":1,"seq":2,"kind":"effect","payload":{}}`, entryjson.ErrDuplicateField, `field "seq" given twice`},
		{"key upper case", `{"KIND":"effect","payload":{}}`, entryjson.ErrUnknownField, `unknown field "KIND": field names are case-sensitive (did you mean "kind"?)`},
		{"key mixed case", `{"kind":"effect","Payload":{}}`, entryjson.ErrUnknownField, `did you mean "payload"?`},
		{"host id null", `{"kind":"effect","host_id":null,"payload":{}}`, entryjson.ErrWrongType, `field "host_id" must be a string, not null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseEntryLine([]byte(tc.line))
			require.ErrorIs(t, err, tc.err, "accepted as %+v", e)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "\n")
		})
	}

	for _, tc := range []struct {
		name, line string
		want       eventlog.Entry
	}{
		{"payload null is the JSON document null", `{"kind":"effect","payload":null}`, eventlog.Entry{Kind: "effect", Payload: []byte(`null`)}},
		{"payload escapes are the payload's own", `{"kind":"effect","payload":{"a":"\ud800","b":"\u00e9"}}`, eventlog.Entry{Kind: "effect", Payload: []byte(`{"a":"\ud800","b":"\u00e9"}`)}},
		{"surrogate pair", `{"kind":"effect","host_id":"\ud83d\ude00","payload":{}}`, eventlog.Entry{Kind: "effect", HostID: "😀", Payload: []byte(`{}`)}},
		{"escaped key", `{"kind":"effect","event\u005fid":"e","payload":{}}`, eventlog.Entry{Kind: "effect", EventID: "e", Payload: []byte(`{}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := parseEntryLine([]byte(tc.line))
			require.NoError(t, err)
			require.Equal(t, tc.want, e)
		})
	}
}

// TestAppendFileStoresAsGiven: what append --file accepts is stored as
// the line says, on each backend, and query -o ndjson gives it back: the
// export appended to the same log is all duplicates.
func TestAppendFileStoresAsGiven(t *testing.T) {
	t.Parallel()
	input := `{"kind":"effect","host_id":"h\ud83d\ude00","rollout_id":"\u00e9t\u00e9","event_id":"given/1","ts":"0001-01-01T00:00:00.000001Z","payload":null}` + "\n" +
		`{"kind":"effect","event_id":"given/2","payload":{"lone":"\ud800", "pair":"\ud83d\ude00"}}` + "\n"
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		u := newUser(t, c.url)
		u.ok("", "migrate", "up")
		require.Contains(t, u.ok(input, "append", "--file", "-"), "appended 2 new events (seqs 1-2), 0 duplicates")

		var stored []struct {
			Host    string `db:"host_id"`
			Rollout string `db:"rollout_id"`
			Payload string `db:"payload"`
		}
		require.NoError(t, c.db().Select(&stored, `SELECT COALESCE(host_id, '') AS host_id, COALESCE(rollout_id, '') AS rollout_id, payload FROM event_log ORDER BY seq`))
		require.Len(t, stored, 2)
		require.Equal(t, "h😀", stored[0].Host)
		require.Equal(t, "été", stored[0].Rollout)
		require.Equal(t, "null", stored[0].Payload)
		require.Equal(t, `{"lone":"\ud800", "pair":"\ud83d\ude00"}`, stored[1].Payload, "the payload's escapes are stored as written")

		export := u.ok("", "query", "-o", "ndjson")
		require.Contains(t, export, `"ts":"0001-01-01T00:00:00.000001Z"`)
		require.Contains(t, u.ok(export, "append", "--file", "-"), "appended 0 new events (seqs none), 2 duplicates")
		require.Equal(t, logState{Events: 2, MaxSeq: 2}, c.state())
	})
}
