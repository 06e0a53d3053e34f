package canonlogcli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

// seedEvents appends n events over two hosts and two kinds; event i has
// ts 2026-05-16T00:00:00Z + i minutes.
func seedEvents(c *cli, n int) {
	c.t.Helper()
	var sb strings.Builder
	for i := range n {
		kind, host := "plan_action", "h0"
		if i%2 == 1 {
			kind, host = "effect", "h1"
		}
		fmt.Fprintf(&sb, `{"kind":%q,"ts":%q,"host_id":%q,"rollout_id":"r1","event_id":"seed/%d","payload":{"i": %d}}`+"\n",
			kind, time.Date(2026, 5, 16, 0, i, 0, 0, time.UTC).Format(time.RFC3339), host, i, i)
	}
	c.ok(sb.String(), "append", "--file", "-")
}

// ndjsonSeqs parses NDJSON output into its seqs.
func ndjsonSeqs(t *testing.T, out string) []int64 {
	t.Helper()
	seqs := []int64{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var v struct{ Seq int64 }
		require.NoError(t, json.Unmarshal([]byte(line), &v), line)
		seqs = append(seqs, v.Seq)
	}
	return seqs
}

func TestQuery(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend).migrated()
		seedEvents(c, 30)

		require.Equal(t, []int64{2, 4, 6}, ndjsonSeqs(t, c.ok("", "query", "--host", "h1", "--limit", "3", "-o", "ndjson")))
		require.Equal(t, []int64{8, 10}, ndjsonSeqs(t, c.ok("", "query", "--kind", "effect", "--after", "6", "--limit", "2", "-o", "ndjson")))
		require.Equal(t, []int64{3, 4}, ndjsonSeqs(t, c.ok("", "query", "--since", "2026-05-16T00:02:00Z", "--until", "2026-05-16T00:04:00Z", "-o", "ndjson")))
		require.Len(t, ndjsonSeqs(t, c.ok("", "query", "--limit", "0", "-o", "ndjson")), 30)
		require.Len(t, ndjsonSeqs(t, c.ok("", "query", "--kind", "plan_action,effect", "-o", "ndjson")), 30)

		var arr []map[string]any
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "query", "--limit", "2", "-o", "json")), &arr))
		require.Len(t, arr, 2)
		require.Equal(t, "seed/0", arr[0]["event_id"])
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "query", "--host", "nobody", "-o", "json")), &arr))
		require.Empty(t, arr)

		table := c.ok("", "query", "--limit", "2")
		require.Contains(t, table, "SEQ")
		require.Contains(t, table, "plan_action")
		require.Contains(t, table, `{"i":0}`) // compacted in a table

		// query -o ndjson is append --file input: into a fresh log it
		// lands as the same events (payload bytes included).
		export := c.ok("", "query", "--limit", "0", "-o", "ndjson")
		other := newCLI(t, backend).migrated()
		other.ok(export, "append", "--file", "-")
		require.Equal(t, export, other.ok("", "query", "--limit", "0", "-o", "ndjson"))
		// And into the same log: every line a duplicate.
		require.Contains(t, c.ok(export, "append", "--file", "-"), "appended 0 new events (seqs none), 30 duplicates")
	})
}

func TestTail(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend).migrated()
		seedEvents(c, 30)

		require.Equal(t, []int64{21, 22, 23, 24, 25, 26, 27, 28, 29, 30}, ndjsonSeqs(t, c.ok("", "tail", "-o", "ndjson")))
		require.Equal(t, []int64{26, 28, 30}, ndjsonSeqs(t, c.ok("", "tail", "-n", "3", "--host", "h1", "-o", "ndjson")))
		require.Equal(t, []int64{29, 30}, ndjsonSeqs(t, c.ok("", "tail", "--after", "28", "-o", "ndjson")))
		require.Empty(t, ndjsonSeqs(t, c.ok("", "tail", "-n", "0", "-o", "ndjson")))
		require.Contains(t, c.ok("", "tail", "-n", "1"), "seed/29")

		// -f follows new events until the context ends (SIGINT or SIGTERM
		// in Main), then exits 130.
		ctx, cancel := context.WithCancel(context.Background())
		var out, errOut testio.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- Run(ctx, nil, []string{"--database-url", c.url, "tail", "-f", "-n", "1", "--kind", "effect", "--poll-interval", "10ms", "-o", "ndjson"},
				strings.NewReader(""), &out, &errOut)
		}()
		require.Eventually(t, func() bool { return strings.Contains(out.String(), `"seed/29"`) }, followWait, 5*time.Millisecond)
		c.ok("", "append", "--kind", "plan_action", "--payload", `{"skip":true}`)
		c.ok("", "append", "--kind", "effect", "--payload", `{"new":true}`)
		require.Eventually(t, func() bool { return strings.Contains(out.String(), `{"new":true}`) }, followWait, 5*time.Millisecond)
		cancel()
		select {
		case code := <-done:
			require.Equal(t, exitInterrupted, code, errOut.String())
			require.Equal(t, "canonlog: tail: interrupted\n", errOut.String())
		case <-time.After(10 * time.Second):
			t.Fatal("tail -f did not stop when interrupted")
		}
		require.Equal(t, []int64{30, 32}, ndjsonSeqs(t, out.String()))
	})
}

// followWait bounds waits on tail -f: on PostgreSQL the follower waits for
// every transaction on the server to end, and tests of other packages
// running at the same time hold some.
const followWait = 3 * time.Minute
