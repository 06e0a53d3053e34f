package canonlogcli

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
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
		require.Contains(t, out, "CIS-1.1.2 (cis): 1 failing host: host-003")
		require.Contains(t, out, `"decision":"hold"`)
		require.Contains(t, out, "rebuilt probe_failures (version 1) online: 4 events replayed, 3 rows")
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
		require.Equal(t, 1, strings.Count(withoutHint(errOut), "\n"), "one line: %q", errOut)
	}
	// None of it created the database file.
	require.NoFileExists(t, filepath.Join(filepath.Dir(strings.TrimPrefix(url, "sqlite:")), "x.db"))
}

func TestDemoHints(t *testing.T) {
	t.Parallel()
	const defaultHints = `Try next:
  canonlog status
  canonlog query --rollout demo-2026-05-16-c --kind gate_decision
  canonlog tail -f                       (and append from another shell)
  canonlog gen --events 100000 | canonlog append --file -
  canonlog rebuild probe_failures && canonlog verify
`
	require.Equal(t, defaultHints, demoHints("canonlog", eventlog.DefaultDatabaseURL, ""))

	t.Run("URL carried, quoted for the shell", func(t *testing.T) {
		for _, tc := range []struct{ raw, source, flag string }{
			{"sqlite:/srv/fleet.db", "--database-url", " --database-url sqlite:/srv/fleet.db"},
			{"sqlite:/srv/fleet.db", "$CANONLOG_DATABASE_URL", " --database-url sqlite:/srv/fleet.db"},
			{"postgres://app@db:5432/app?sslmode=disable&connect_timeout=5", "$DATABASE_URL",
				" --database-url 'postgres://app@db:5432/app?sslmode=disable&connect_timeout=5'"},
			{"sqlite:/srv/it's here.db", "--database-url", ` --database-url 'sqlite:/srv/it'\''s here.db'`},
		} {
			got := demoHints("canonlog", tc.raw, tc.source)
			require.Contains(t, got, "  canonlog status"+tc.flag+"\n")
			require.Contains(t, got, "  canonlog gen --events 100000 | canonlog append"+tc.flag+" --file -\n")
			require.Contains(t, got, "  canonlog rebuild"+tc.flag+" probe_failures && canonlog verify"+tc.flag+"\n")
			require.Equal(t, 6, strings.Count(got, "--database-url"), got)
		}
	})
	t.Run("password", func(t *testing.T) {
		const raw = "postgres://app:s3cret@db/app"
		got := demoHints("canonlog", raw, "--database-url")
		require.NotContains(t, got, "s3cret")
		require.Contains(t, got, "  canonlog status --database-url postgres://app:xxxxx@db/app\n")
		require.Contains(t, got, "(the URL's secret shows as xxxxx: put it back, or export CANONLOG_DATABASE_URL and drop --database-url)")
		// From the environment, the URL stays there: a placeholder on the
		// command line would override it.
		got = demoHints("canonlog", raw, "$CANONLOG_DATABASE_URL")
		require.NotContains(t, got, "s3cret")
		require.NotContains(t, got, "--database-url")
		require.Contains(t, got, "  canonlog status\n")
		require.Contains(t, got, "(they read the database URL from $CANONLOG_DATABASE_URL, as the demo did)")
	})
	t.Run("invocation", func(t *testing.T) {
		bi := &debug.BuildInfo{Path: "github.com/canonlog/canonlog/cmd/canonlog", Main: debug.Module{Path: "github.com/canonlog/canonlog"}}
		goRun := filepath.Join(os.TempDir(), "go-build2931/b001/exe/canonlog")
		require.Equal(t, "go run ./cmd/canonlog", invocation("canonlog", goRun, bi))
		// From Go 1.24 on, go run keeps what it builds in the build cache.
		cached := "/root/.cache/go-build/40/40793ed8ec9cc212853176ff13f7473120f9d96852eabb3370bec979c84f5213-d/canonlog"
		require.Equal(t, "go run ./cmd/canonlog", invocation("canonlog", cached, bi))
		require.Equal(t, "canonlog", invocation("canonlog", "/root/.cache/go-build/40/not-a-hash-d/canonlog", bi))
		require.Equal(t, "canonlog", invocation("canonlog", "/usr/local/bin/canonlog", bi))
		require.Equal(t, "canonlog", invocation("canonlog", "", bi))
		// go test's binaries live in go-build directories too.
		require.Equal(t, "canonlog", invocation("canonlog", filepath.Join(os.TempDir(), "go-build2931/b001/canonlogcli.test"), bi))
		fleet := &debug.BuildInfo{Path: "example.com/fleet/cmd/fleetd", Main: debug.Module{Path: "example.com/fleet"}}
		require.Equal(t, "go run ./cmd/fleetd", invocation("fleetd", filepath.Join(os.TempDir(), "go-build1/b001/exe/fleetd"), fleet))
		root := &debug.BuildInfo{Path: "example.com/fleetd", Main: debug.Module{Path: "example.com/fleetd"}}
		require.Equal(t, "go run .", invocation("fleetd", filepath.Join(os.TempDir(), "go-build1/b001/exe/fleetd"), root))
		files := &debug.BuildInfo{Path: "command-line-arguments", Main: debug.Module{Path: "example.com/fleet"}}
		require.Equal(t, "go run ./cmd/fleetd", invocation("fleetd", filepath.Join(os.TempDir(), "go-build1/b001/exe/fleetd"), files))
	})
	t.Run("a service's name", func(t *testing.T) {
		t.Parallel()
		url := "sqlite:" + filepath.Join(t.TempDir(), "fleet.db")
		r := runWith(t, &Config{Name: "fleetd"}, "--database-url", url, "demo", "--hosts", "2", "--progress", "none")
		require.Equal(t, 0, r.code, r.err)
		require.Contains(t, r.out, "\n  fleetd status --database-url "+url+"\n")
		require.Contains(t, r.out, "\n  fleetd gen --events 100000 | fleetd append --database-url "+url+" --file -\n")
		require.NotContains(t, r.out, "canonlog ")
	})
}
