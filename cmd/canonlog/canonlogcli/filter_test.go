package canonlogcli

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// TestFilterFlagsRefused: query and tail refuse filter values the log
// cannot hold — ids that are not UTF-8 or too long, times outside years
// 0001-9999 — the same way on both backends (PostgreSQL used to answer
// with a raw driver error, SQLite with an empty result): a one-line usage
// error naming the flag, exit 2, before connecting.
func TestFilterFlagsRefused(t *testing.T) {
	t.Parallel()
	rows := []struct {
		args []string
		want string
	}{
		{[]string{"--since", "0000-01-01T00:00:00Z"}, "--since: 0000-01-01T00:00:00Z is outside years 0001-9999"},
		{[]string{"--since", "0001-01-01T00:30:00+01:00"}, "--since: 0000-12-31T23:30:00Z is outside years 0001-9999"},
		{[]string{"--until", "9999-12-31T23:30:00-01:00"}, "--until: 10000-01-01T00:30:00Z is outside years 0001-9999"},
		{[]string{"--host", "\xff"}, "--host: not valid UTF-8"},
		{[]string{"--host", strings.Repeat("h", 513)}, "--host: 513 bytes, at most 512 allowed"},
		{[]string{"--rollout", "r\xc3\x28"}, "--rollout: not valid UTF-8"},
		{[]string{"--host", "h1", "--rollout", "\xfe"}, "--rollout: not valid UTF-8"},
	}
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		u := newUser(t, c.url)
		u.ok("", "migrate", "up")
		u.ok(hostileSeed, "append", "--file", "-")
		before := c.state()
		// A database that cannot be reached: the flags are refused before
		// it is tried.
		unreachable := newUser(t, map[string]string{
			"sqlite":   "sqlite:" + t.TempDir() + "/missing.db",
			"postgres": "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
		}[backend])
		for _, cmd := range []string{"query", "tail"} {
			for _, tc := range rows {
				args := append([]string{cmd}, tc.args...)
				for _, usr := range []*user{u, unreachable} {
					r := usr.run("", args...)
					require.Equal(t, exitUsage, r.code, "%q: %s", args, r.err)
					require.Equal(t, "canonlog: "+tc.want+"\nRun 'canonlog "+cmd+" --help' for usage.\n", r.err, "%q", args)
					require.Empty(t, r.out)
				}
			}
		}
		// A NUL cannot pass through a process's arguments; in process it
		// is refused the same way.
		for _, cmd := range []string{"query", "tail"} {
			r := c.run("", cmd, "--host", "h\x00")
			require.Equal(t, exitUsage, r.code, r.err)
			require.Contains(t, r.err, "canonlog: --host: contains a NUL byte\n")
		}
		require.Equal(t, before, c.state())

		// The edges of the stored range still query.
		require.Equal(t, []int64{1, 2}, ndjsonSeqs(t, u.ok("", "query", "--since", "0001-01-01T00:00:00Z", "--until", "9999-12-31T23:59:59.999999Z", "-o", "ndjson")))
	})
}
