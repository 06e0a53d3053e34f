package canonlogcli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		// 5 events per host per rollout, 3 per rollout, 3 rollouts.
		out := c.ok("", "demo", "--hosts", "6", "--progress", "lines")
		require.Contains(t, out, "appended 99 new events (0 already present); last seq 99")
		// Rollout c: hosts 2 and 6 fail CIS-5.2.1, host 3 fails CIS-1.1.2;
		// rollout b's failure is observe-mode and writes nothing.
		require.Contains(t, out, "rollout demo-2026-05-15-b: 0 of 6 hosts fail a control")
		require.Contains(t, out, "rollout demo-2026-05-16-c: 3 of 6 hosts fail a control")
		require.Contains(t, out, "CIS-5.2.1 (cis): 2 failing hosts: host-002, host-006")
		require.Contains(t, out, "CIS-1.1.2 (cis): 1 failing hosts: host-003")
		require.Contains(t, out, `"decision":"hold"`)
		require.Contains(t, out, "rebuilt probe_failures (version 1): 36 events replayed, 3 rows")
		require.Contains(t, out, "verified probe_failures")
		require.Contains(t, out, "Try next:")
		events, rows := c.counts()
		require.Equal(t, 99, events)
		require.Equal(t, 3, rows)

		// Idempotent: a second run appends nothing and gives the same answer.
		out2 := c.ok("", "demo", "--hosts", "6", "--progress", "none")
		require.Contains(t, out2, "appended 0 new events (99 already present); last seq 99")
		require.Contains(t, out2, "CIS-5.2.1 (cis): 2 failing hosts: host-002, host-006")
		events, rows = c.counts()
		require.Equal(t, 99, events)
		require.Equal(t, 3, rows)
	})
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	url := "sqlite:" + filepath.Join(t.TempDir(), "x.db")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--database-url", url, "demo", "--hosts", "0"}, 2, "--hosts is 0"},
		{[]string{"demo", "--no-such-flag"}, 2, "unknown flag"},
		{[]string{"no-such-command"}, 2, "unknown command"},
		{[]string{"demo", "extra-arg"}, 2, "extra-arg"},
		{[]string{"--database-url", "mysql://nope", "demo"}, 1, "unknown scheme"},
		{[]string{"--database-url", "sqlite:", "demo"}, 1, "has no file path"},
		{[]string{"migrate"}, 2, "subcommand"},
		{[]string{"--database-url", url, "migrate", "down"}, 2, "--yes"},
		{[]string{"--database-url", url, "rebuild"}, 2, "probe_failures"},
		{[]string{"--database-url", url, "rebuild", "--all", "probe_failures"}, 2, "--all"},
		{[]string{"--database-url", url, "rebuild", "nope"}, 2, `unknown projection "nope": known projections are probe_failures`},
		{[]string{"--database-url", url, "verify", "nope"}, 2, "known projections are probe_failures"},
		{[]string{"--database-url", url, "query", "--output", "xml"}, 2, "--output is \"xml\""},
		{[]string{"--database-url", url, "query", "--since", "yesterday"}, 2, "RFC 3339"},
		{[]string{"--database-url", url, "query", "--kind", "Bad Kind"}, 2, "--kind"},
		{[]string{"--database-url", url, "tail", "--after", "1", "-n", "3"}, 2, "do not mix"},
		{[]string{"gen", "--fail-ratio", "2"}, 2, "--fail-ratio"},
		{[]string{"gen", "--hosts", "0"}, 2, "--hosts"},
		{[]string{"--database-url", url, "append", "--kind", "agent_event"}, 2, "--payload"},
		{[]string{"--database-url", url, "append", "--file", "x", "--kind", "agent_event"}, 2, "do not mix"},
	} {
		_, errOut, code := runCLI(t, tc.args...)
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
		require.Equal(t, 1, strings.Count(strings.TrimSuffix(errOut, "Run 'canonlog --help' for usage.\n"), "\n"), "one line: %q", errOut)
	}
	// None of it created the database file.
	require.NoFileExists(t, filepath.Join(filepath.Dir(strings.TrimPrefix(url, "sqlite:")), "x.db"))
}
