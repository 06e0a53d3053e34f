package canonlogcli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

const failingProbe = `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"CIS-5.2.1","framework":"cis","status":"fail"}]}`

func TestAppend(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend).migrated()

		t.Run("OneFromFlags", func(t *testing.T) {
			out := c.ok("", "append", "--kind", "agent_event", "--host", "h1", "--rollout", "r1",
				"--event-id", "h1/1", "--ts", "2026-05-16T01:00:00.123456Z", "--payload", failingProbe)
			require.Equal(t, "seq 1\n", out)
			// The projection ran in the same transaction.
			_, rows := c.counts()
			require.Equal(t, 1, rows)
			// Again: a duplicate, nothing written.
			out = c.ok("", "append", "--kind", "agent_event", "--host", "h1", "--rollout", "r1",
				"--event-id", "h1/1", "--ts", "2026-05-16T01:00:00.123456Z", "--payload", failingProbe)
			require.Equal(t, "seq 1 duplicate (event id \"h1/1\" already stored; nothing written)\n", out)
			// Same id, other content: refused with what to do.
			r := c.run("", "append", "--kind", "agent_event", "--host", "h2", "--event-id", "h1/1", "--payload", `{}`)
			require.Equal(t, 1, r.code)
			require.Contains(t, r.err, "host_id")
			require.Contains(t, r.err, "use a new event id")
		})

		t.Run("PayloadFromFileByteExact", func(t *testing.T) {
			payload := "{\n  \"b\": 1,\t\"a\": \"\\u00e9\"\n}\n"
			path := filepath.Join(t.TempDir(), "p.json")
			require.NoError(t, os.WriteFile(path, []byte(payload), 0o600))
			out := c.ok("", "append", "--kind", "plan_action", "--payload", "@"+path, "-o", "json")
			var rep appendReport
			require.NoError(t, json.Unmarshal([]byte(out), &rep))
			require.Equal(t, 1, rep.New)
			seq := rep.Listed[0].Seq
			var stored string
			require.NoError(t, c.db().Get(&stored, c.db().Rebind(`SELECT payload FROM event_log WHERE seq = ?`), seq))
			require.Equal(t, payload, stored)
			// Exported as NDJSON it goes as payload_text (it holds line
			// breaks); appended again (no event id: a new event) it keeps
			// its bytes.
			line := c.ok("", "query", "--after", fmt.Sprint(seq-1), "--limit", "1", "-o", "ndjson")
			require.Contains(t, line, `"payload_text":`)
			require.Equal(t, 1, strings.Count(line, "\n"))
			out = c.ok(line, "append", "--file", "-", "-o", "json")
			require.NoError(t, json.Unmarshal([]byte(out), &rep))
			require.NoError(t, c.db().Get(&stored, c.db().Rebind(`SELECT payload FROM event_log WHERE seq = ?`), rep.Listed[0].Seq))
			require.Equal(t, payload, stored)
		})

		t.Run("FileAsOneBatch", func(t *testing.T) {
			input := strings.Join([]string{
				`{"kind":"agent_event","ts":"2026-05-16T02:00:00Z","host_id":"h3","rollout_id":"r2","event_id":"h3/1","payload":` + failingProbe + `}`,
				``, // blank lines are skipped
				`{"seq":99,"kind":"gate_decision","rollout_id":"r2","payload":{"decision":"hold"}}`,
				`{"kind":"agent_event","ts":"2026-05-16T02:00:00Z","host_id":"h3","rollout_id":"r2","event_id":"h3/1","payload":` + failingProbe + `}`,
				`{"kind":"agent_event","host_id":"h1","rollout_id":"r1","event_id":"h1/1","ts":"2026-05-16T01:00:00.123456Z","payload":` + failingProbe + `}`,
			}, "\n")
			before, beforeRows := c.counts()
			out := c.ok(input, "append", "--file", "-")
			require.Contains(t, out, "line 1: seq ")
			require.Contains(t, out, "line 4: seq ")
			require.Contains(t, out, "duplicate")
			require.Contains(t, out, "line 5: seq 1 duplicate")
			require.Contains(t, out, "appended 2 new events")
			require.Contains(t, out, "2 duplicates")
			after, afterRows := c.counts()
			require.Equal(t, before+2, after)
			require.Equal(t, beforeRows+1, afterRows)
		})

		t.Run("BadLinesWriteNothing", func(t *testing.T) {
			good := `{"kind":"plan_action","payload":{"ok":true}}`
			for _, tc := range []struct {
				name, bad, want string
			}{
				{"NotJSON", `{"kind":"plan_action","payload":{"ok":tru}}`, "line 3: not valid JSON"},
				{"BadKind", `{"kind":"Plan Action","payload":{}}`, "line 3: kind: invalid kind"},
				{"NoPayload", `{"kind":"plan_action"}`, `line 3: "payload" is required`},
				{"UnknownField", `{"kind":"plan_action","host":"h","payload":{}}`, `line 3: unknown field "host": the fields are kind, ts`},
				{"WrongType", `{"kind":"plan_action","host_id":7,"payload":{}}`, `line 3: field "host_id" must be a string`},
				{"NotObject", `[1,2]`, `line 3: `},
				{"BadTS", `{"kind":"plan_action","ts":"yesterday","payload":{}}`, `line 3: ts "yesterday"`},
				{"NUL", `{"kind":"plan_action","payload":"\u0000"}`, "line 3: payload: payload contains a NUL"},
				{"MalformedProbe", `{"kind":"agent_event","host_id":"h","payload":{"type":"ProbeResult","mode":"enforce","status":"fail"}}`, "line 3: refused by probe_failures"},
				{"Conflict", `{"kind":"plan_action","event_id":"h3/1","payload":{}}`, `line 3: event id "h3/1" is already used by event`},
				{"TwoValues", `{"kind":"plan_action","payload":{}} {}`, "line 3: more than one JSON value"},
			} {
				events, rows := c.counts()
				r := c.run(good+"\n"+good+"\n"+tc.bad+"\n"+good+"\n", "append", "--file", "-")
				require.Equal(t, 1, r.code, tc.name)
				require.Contains(t, r.err, tc.want, tc.name)
				require.Contains(t, r.err, "nothing was appended", tc.name)
				require.Equal(t, 1, strings.Count(r.err, "\n"), "%s: one line: %s", tc.name, r.err)
				e2, r2 := c.counts()
				require.Equal(t, events, e2, tc.name)
				require.Equal(t, rows, r2, tc.name)
			}
		})

		t.Run("BadFlagsWriteNothing", func(t *testing.T) {
			events, _ := c.counts()
			for _, args := range [][]string{
				{"--kind", "agent_event", "--payload", `{"a":`},
				{"--kind", "Agent", "--payload", `{}`},
				{"--kind", "agent_event", "--payload", `{}`, "--ts", "now"},
				{"--kind", "agent_event", "--host", "h", "--payload", `{"type":"ProbeResult","mode":"enforce","status":"fail"}`},
			} {
				r := c.run("", append([]string{"append"}, args...)...)
				require.Equal(t, 2, r.code, "%v: %s", args, r.err)
			}
			after, _ := c.counts()
			require.Equal(t, events, after)
		})

		t.Run("ConflictWithinTheInput", func(t *testing.T) {
			// The first holder of the event id is in the same input, which
			// fails as a whole: its seq is never stored (on SQLite the next
			// append takes it), so the error names its line, not a seq.
			first := `{"kind":"effect","event_id":"%s","payload":{"v":1}}` + "\n"
			again := `{"kind":"effect","event_id":"%s","payload":{"v":2}}` + "\n"
			filler := func(n int) string {
				return strings.Repeat(`{"kind":"effect","payload":{}}`+"\n", n)
			}
			for _, tc := range []struct {
				name, input, want string
			}{
				{"SameChunk", fmt.Sprintf(first, "in/1") + filler(1) + fmt.Sprintf(again, "in/1"),
					`line 3: event id "in/1" is already used by line 1 with a different payload`},
				{"EarlierChunk", fmt.Sprintf(first, "in/2") + filler(chunkEntries) + fmt.Sprintf(again, "in/2"),
					fmt.Sprintf(`line %d: event id "in/2" is already used by an earlier line with a different payload`, chunkEntries+2)},
			} {
				events, _ := c.counts()
				r := c.run(tc.input, "append", "--file", "-")
				require.Equal(t, 1, r.code, tc.name)
				require.Contains(t, r.err, tc.want, tc.name)
				require.Contains(t, r.err, "nothing was appended", tc.name)
				after, _ := c.counts()
				require.Equal(t, events, after, tc.name)
			}
		})

		t.Run("ErrorsInLineOrder", func(t *testing.T) {
			// The input is read ahead of the appends: a bad line two
			// chunks on is parsed before the database refuses a line of
			// the first chunk. The error is the first line's all the same.
			c.ok(`{"kind":"effect","event_id":"order/1","payload":{"v":1}}`+"\n", "append", "--file", "-")
			input := `{"kind":"effect","payload":{}}` + "\n" + `{"kind":"effect","event_id":"order/1","payload":{"v":2}}` + "\n" +
				strings.Repeat(`{"kind":"effect","payload":{}}`+"\n", 2*chunkEntries) + "{oops\n"
			events, _ := c.counts()
			r := c.run(input, "append", "--file", "-")
			require.Equal(t, 1, r.code)
			require.Contains(t, r.err, `line 2: event id "order/1" is already used by event`)
			require.NotContains(t, r.err, fmt.Sprintf("line %d", 2*chunkEntries+3))
			after, _ := c.counts()
			require.Equal(t, events, after)
		})

		t.Run("ManyChunksOneTransaction", func(t *testing.T) {
			// More than one chunk, with a bad line at the end: the chunks
			// already handed to AppendTx roll back too.
			var sb strings.Builder
			for i := range chunkEntries + 10 {
				fmt.Fprintf(&sb, `{"kind":"effect","event_id":"chunk/%d","payload":{"i":%d}}`+"\n", i, i)
			}
			events, _ := c.counts()
			r := c.run(sb.String()+"{oops\n", "append", "--file", "-")
			require.Equal(t, 1, r.code)
			require.Contains(t, r.err, fmt.Sprintf("line %d:", chunkEntries+11))
			after, _ := c.counts()
			require.Equal(t, events, after)
			// Without the bad line it lands, summarized rather than listed.
			out := c.ok(sb.String(), "append", "--file", "-")
			require.Contains(t, out, fmt.Sprintf("appended %d new events (seqs ", chunkEntries+10))
			require.NotContains(t, out, "line 1:")
		})
	})
}

func TestAppendNoSchema(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		r := c.run("", "append", "--kind", "plan_action", "--payload", "{}")
		require.Equal(t, 1, r.code)
		if backend == "sqlite" {
			require.Contains(t, r.err, "no database at")
			require.NoFileExists(t, strings.TrimPrefix(c.url, "sqlite:"))
		} else {
			require.Contains(t, r.err, "run 'canonlog migrate up' first")
		}
	})
}
