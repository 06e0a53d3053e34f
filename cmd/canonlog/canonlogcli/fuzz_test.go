package canonlogcli

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
)

// The fuzz targets below run over their seeds and testdata/fuzz/ in every
// go test; run them for real with e.g.
//
//	go test ./cmd/canonlog/canonlogcli -run '^$' -fuzz '^FuzzParseEntryLine$' -fuzztime 10m -parallel 1

// memoryEnv opens what the command opens, on a private in-memory SQLite
// database: the log with probe_failures registered, migrated.
func memoryEnv() (*env, error) {
	g := &globals{cfg: (*Config)(nil).withDefaults(), databaseURL: "sqlite::memory:"}
	return g.open(context.Background(), migrateSchema)
}

// fuzzLineSeeds are NDJSON lines covering the input's edge cases.
var fuzzLineSeeds = []string{
	`{"kind":"agent_event","ts":"2026-05-16T01:00:00Z","host_id":"h1","rollout_id":"r1","event_id":"h1/7","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}}`,
	`{"seq":12,"ts":"2026-05-16T01:00:00.123456789+02:00","kind":"effect","payload":[1, 2 ,3]}`,
	`{"kind":"effect","payload_text":"{\n  \"a\": 1\n}"}`,
	`{"kind":"effect","payload":{},"payload_text":"{}"}`,
	`{"kind":"effect","payload_text":"not json"}`,
	`{"kind":"effect","payload":"\u0000"}`,
	`{"kind":"effect","payload_text":"\"\\u0000\""}`,
	"{\"kind\":\"effect\",\"payload\":\"\x00\"}",
	"{\"kind\":\"effect\",\"payload\":\"\xff\xfe\"}",
	"{\"kind\":\"effect\",\"host_id\":\"\xff\",\"payload\":{}}",
	`{"kind":"effect","host_id":"\ud800","payload":{}}`,
	`{"kind":"effect","event_id":"x'; DROP TABLE event_log; --","payload":{}}`,
	`{"kind":"effect","host_id":"` + strings.Repeat("h", 513) + `","payload":{}}`,
	`{"kind":"effect","payload":` + strings.Repeat("[", 1001) + strings.Repeat("]", 1001) + `}`,
	`{"kind":"effect","payload":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	`{"kind":"effect","payload":1e999999}`,
	`{"kind":"effect","payload":123456789012345678901234567890}`,
	`{"kind":"effect","ts":"0000-01-01T00:00:00Z","payload":{}}`,
	`{"kind":"effect","ts":"9999-12-31T23:59:59-01:00","payload":{}}`,
	`{"kind":"effect","ts":"2026-02-30T00:00:00Z","payload":{}}`,
	`{"kind":"effect","ts":"yesterday","payload":{}}`,
	`{"kind":"effect","ts":12,"payload":{}}`,
	`{"kind":"Effect","payload":{}}`,
	`{"kind":"","payload":{}}`,
	`{"kind":"effect"}`,
	`{"payload":{}}`,
	`{"kind":"effect","payload":{},"host":"h1"}`,
	`{"kind":"effect","payload":{}} {"kind":"effect","payload":{}}`,
	`{"kind":"effect","payload":{},"kind":"agent_event"}`,
	`{"KIND":"effect","Payload":{}}`,
	`{"kind":"agent_event","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":""}}`,
	`{"kind":"agent_event","payload":{"type":"ProbeResult","probe_name":"ssh"}}`,
	`[]`, `null`, `"x"`, `{`, `{"kind":`, `}`, ``,
	// What encoding/json would substitute: refused (entryjson).
	"{\"kind\":\"effect\xff\",\"payload\":{}}",
	"{\"kind\":\"effect\",\"rollout_id\":\"\xed\xa0\x80\",\"payload\":{}}",
	"{\"kind\":\"effect\",\"ts\":\"2026-05-16T01:00:00Z\xff\",\"payload\":{}}",
	"{\"kind\xff\":\"effect\",\"payload\":{}}",
	`{"kind":"effect","rollout_id":"\udc00","event_id":"\ud800\u0041","payload":{}}`,
	`{"kind":"effect","payload_text":"\"\ud800\""}`,
	`{"kind":"effect","ts":"0001-01-01T00:00:00Z","payload":{}}`,
	`{"kind":"effect","ts":"0001-01-01T01:00:00+01:00","payload":{}}`,
	`{"kind":"effect","ts":"0001-01-01T00:00:00.0000001Z","payload":{}}`,
	`{"kind":"effect","ts":"","payload":{}}`,
	`{"kind":"effect","host_id":null,"payload":{}}`,
	`{"seq":1,"seq":2,"kind":"effect","payload":{}}`,
	`{"kind":"effect","payload":{},"Host_Id":"h"}`,
	// Stored as given.
	`{"kind":"effect","payload":null}`,
	`{"kind":"effect","host_id":"\ud83d\ude00","event\u005fid":"\u00e9","payload":{"lone":"\ud800"}}`,
	`{"kind":"effect","ts":"0001-01-01T00:00:00.000001Z","payload":{}}`,
}

func FuzzParseEntryLine(f *testing.F) {
	for _, s := range fuzzLineSeeds {
		f.Add([]byte(s))
	}
	e, err := memoryEnv()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(e.Close)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, line []byte) {
		entry, err := parseEntryLine(line)
		if err != nil {
			if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("parseEntryLine(%q): error %q is not one line", line, msg)
			}
			return
		}
		// Nothing was substituted: a U+FFFD in the entry was written in
		// the line, raw or escaped.
		wrote := bytes.Contains(line, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(line), []byte(`\ufffd`))
		for _, v := range []string{string(entry.Kind), entry.HostID, entry.RolloutID, entry.EventID, string(entry.Payload)} {
			if strings.ContainsRune(v, '\uFFFD') && !wrote {
				t.Fatalf("parseEntryLine(%q): %q holds a U+FFFD the line did not write", line, v)
			}
		}
		// An accepted line is an entry the log takes.
		tx, err := e.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		res, err := e.log.AppendTx(ctx, tx, entry)
		if err != nil {
			t.Fatalf("parseEntryLine(%q) accepted an entry the log refuses: %v", line, err)
		}
		if !entry.TS.IsZero() && !res[0].Event.TS.Equal(eventlog.NormalizeTime(entry.TS)) {
			t.Fatalf("ts %v stored as %v", entry.TS, res[0].Event.TS)
		}
		// What query -o ndjson prints for the stored event reads back as
		// the same entry.
		stored, err := e.log.QueryTx(ctx, tx, eventlog.Filter{AfterSeq: res[0].Event.Seq - 1, Limit: 1})
		if err != nil || len(stored) != 1 {
			t.Fatalf("read back: %v (%d events)", err, len(stored))
		}
		ev := stored[0]
		out := appendEventJSON(nil, ev, true)
		again, err := parseEntryLine(out)
		switch {
		case err != nil:
			t.Fatalf("query output %q does not read back: %v", out, err)
		case again.Kind != entry.Kind || again.HostID != entry.HostID || again.RolloutID != entry.RolloutID || again.EventID != entry.EventID:
			t.Fatalf("%q read back from %q as %+v", line, out, again)
		case !bytes.Equal(again.Payload, entry.Payload) || !bytes.Equal(ev.Payload, entry.Payload):
			t.Fatalf("payload %q stored as %q, read back as %q", entry.Payload, ev.Payload, again.Payload)
		case !again.TS.Equal(ev.TS):
			t.Fatalf("ts %v read back as %v", ev.TS, again.TS)
		}
	})
}

var lineError = regexp.MustCompile(`^line (\d+): `)

func FuzzAppendNDJSON(f *testing.F) {
	for _, s := range fuzzLineSeeds {
		f.Add([]byte(`{"kind":"effect","payload":{}}` + "\n" + s + "\n"))
	}
	f.Add([]byte(""))
	f.Add([]byte("\n\n \r\n\t\n"))
	f.Add([]byte(`{"kind":"effect","event_id":"a","payload":{}}` + "\n" + `{"kind":"effect","event_id":"a","payload":{}}`))
	f.Add([]byte(`{"kind":"effect","event_id":"a","payload":{}}` + "\n" + `{"kind":"effect","event_id":"a","payload":[]}`))
	f.Add([]byte(`{"kind":"effect","payload":{}}` + "\r\n" + `{"kind":"effect","payload":{}}` + "\r\n" + `{"kind":"effect","payload":{`))
	f.Add([]byte(strings.Repeat(`{"kind":"effect","payload":1}`+"\n", 1001) + `{"kind":"effect","payload":`))

	e, err := memoryEnv()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { e.Close() })
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		// Read the input as the command does, line by line, to know the
		// first line that must be refused.
		firstBad, entries := 0, 0
		for i, l := range bytes.Split(data, []byte("\n")) {
			l = bytes.TrimSpace(l)
			if len(l) == 0 {
				continue
			}
			if _, err := parseEntryLine(l); err != nil {
				firstBad = i + 1
				break
			}
			entries++
		}
		before := countEvents(t, e.db)
		var report appendReport
		err := dbutil.WithTx(ctx, e.db, nil, func(tx *sqlx.Tx) error {
			return appendNDJSON(ctx, e.log, tx, bytes.NewReader(data), &report)
		})
		after := countEvents(t, e.db)
		if err != nil {
			if after != before {
				t.Fatalf("%d events committed by an append that failed with %v", after-before, err)
			}
			msg := err.Error()
			m := lineError.FindStringSubmatch(msg)
			if m == nil || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error %q does not name a line, or is not one line", msg)
			}
			n, _ := strconv.Atoi(m[1])
			switch {
			case firstBad == 0 && !strings.Contains(msg, "is already used by "):
				// Every line reads: only an event id reused with other
				// content, which takes the log to see, is left to refuse.
				t.Fatalf("every line reads, yet the append failed with %q", msg)
			case firstBad > 0 && entries < chunkEntries && n != firstBad:
				t.Fatalf("error %q, want it to name line %d", msg, firstBad)
			}
			return
		}
		if firstBad > 0 {
			t.Fatalf("line %d must be refused, yet the append succeeded", firstBad)
		}
		if report.Entries != entries || report.New+report.Duplicates != entries || after-before != report.New {
			t.Fatalf("%d entries read: report %+v, %d events committed", entries, report, after-before)
		}
		if after > 50000 { // keep the in-memory database small
			e.Close()
			if e, err = memoryEnv(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func countEvents(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	var n int
	if err := db.Get(&n, `SELECT COUNT(*) FROM event_log`); err != nil {
		t.Fatal(err)
	}
	return n
}
