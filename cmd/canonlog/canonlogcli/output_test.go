package canonlogcli

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLIPlural(t *testing.T) {
	t.Parallel()
	require.Equal(t, "0 events", plural(0, "event", "events"))
	require.Equal(t, "1 event", plural(1, "event", "events"))
	require.Equal(t, "2 events", plural(int64(2), "event", "events"))
	require.Equal(t, "-1 rows", plural(-1, "row", "rows"))

	// Counts of one, as printed.
	c := newCLI(t, "sqlite").migrated()
	probe := `{"kind":"agent_event","host_id":"h1","rollout_id":"r1","event_id":"p1","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}}` + "\n"
	require.Contains(t, c.ok(probe+`{"kind":"effect","payload":{}}`+"\n", "append", "--file", "-"), "appended 2 new events (seqs 1-2), 0 duplicates\n")
	require.Contains(t, c.ok(probe+`{"kind":"effect","payload":{}}`+"\n", "append", "--file", "-"), "appended 1 new event (seqs 3), 1 duplicate\n")
	r := c.run("", "rebuild", "probe_failures", "--progress", "lines")
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, "rebuilt probe_failures (version 1) online: 1 event replayed, 1 row, up to seq 3")
	require.Contains(t, r.err, "rebuild probe_failures: build 1/1 event (100%)")
	require.Contains(t, c.ok("", "verify"), "probe_failures: equal to a fresh derivation (1 event replayed)\n")
}
