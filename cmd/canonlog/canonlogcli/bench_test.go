package canonlogcli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/bench"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// TestBench checks the command's wiring: flags to the harness (tested in
// internal/bench), the report to the output, the configured database
// untouched.
func TestBench(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		out := c.ok("", "bench", "--events", "1", "--rounds", "2", "--clients", "1", "--scenario", "read", "-o", "json")
		var rep bench.Report
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Equal(t, backend, rep.Backend)
		require.Equal(t, "realistic", rep.Profile)
		require.Equal(t, 1, rep.Events)
		require.Equal(t, 2, rep.Rounds)
		require.Equal(t, 1, rep.Clients)
		require.Len(t, rep.Scenarios, 1)
		require.Equal(t, "read", rep.Scenarios[0].Name)
		require.Len(t, rep.Scenarios[0].RawRuns, 2)

		// The scratch databases are gone, and the configured database was
		// never touched.
		if backend == "postgres" {
			require.True(t, strings.HasPrefix(rep.Scratch, "canonlog_bench_"), rep.Scratch)
			var n int
			require.NoError(t, dbtest.Admin(t).Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE starts_with(nspname, $1)`, rep.Scratch))
			require.Zero(t, n, "scratch schemas %s_* left behind", rep.Scratch)
			require.NoError(t, c.db().Get(&n, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()`))
			require.Zero(t, n, "tables created in the configured schema")
		} else {
			path, ok := eventlog.SQLiteFile(c.url)
			require.True(t, ok)
			require.Equal(t, filepath.Dir(path), filepath.Dir(rep.Scratch), "scratch directory next to the configured file")
			entries, err := os.ReadDir(filepath.Dir(path))
			require.NoError(t, err)
			require.Empty(t, entries, "files left next to the configured database")
		}

		// The table carries one line per scenario asked for, with the peak
		// RSS for rebuild.
		profile := filepath.Join(t.TempDir(), "cpu.out")
		r := c.run("", "bench", "--events", "1", "--rounds", "1", "--scenario", "read,rebuild", "--cpuprofile", profile, "--profile", "dense")
		require.Equal(t, exitOK, r.code, r.err)
		require.Contains(t, r.err, "bench: "+backend+", scratch ")
		fi, err := os.Stat(profile)
		require.NoError(t, err)
		require.Positive(t, fi.Size())
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		require.Len(t, lines, 4, r.out)
		require.True(t, strings.HasPrefix(lines[0], "canonlog bench on "+backend+", dense data: 1 round per scenario"), r.out)
		require.Contains(t, lines[1], "SCENARIO")
		require.True(t, strings.HasPrefix(lines[2], "read "), r.out)
		require.True(t, strings.HasPrefix(lines[3], "rebuild "), r.out)
		require.Contains(t, lines[3], "MiB")

		// rebuild-load takes its own flags and reports in a section of its
		// own.
		out = c.ok("", "bench", "--scenario", "rebuild-load", "--events", "100", "--writers", "1", "--write-rate", "200", "--load-baseline", "100ms", "-o", "json")
		rep = bench.Report{}
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Empty(t, rep.Scenarios)
		require.NotNil(t, rep.Load)
		require.Equal(t, 100, rep.Load.Events)
		require.Equal(t, 1, rep.Load.Writers)
		require.Equal(t, 100.0, rep.Load.BaselineMS)
		require.Equal(t, 200.0, rep.Load.WriteRate)
		require.Len(t, rep.Load.Cases, 4)
		require.NotEmpty(t, rep.Load.Targets)
	})
}

func TestBenchUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bench", "--scenario", "nope"},
		{"bench", "--events", "0"},
		{"bench", "--rounds", "0"},
		{"bench", "--rounds", "101"},
		{"bench", "--clients", "0"},
		{"bench", "--clients", "257"},
		{"bench", "-o", "yaml"},
		{"bench", "--writers", "0"},
		{"bench", "--writers", "257"},
		{"bench", "--load-baseline", "0s"},
		{"bench", "--load-baseline", "2h"},
		{"bench", "--write-rate", "-1"},
		{"bench", "--profile", "sparse"},
	} {
		_, errOut, code := runCLI(t, args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, errOut)
	}
}

// An unreachable server fails with the hint of every command.
func TestBenchUnreachable(t *testing.T) {
	t.Parallel()
	_, errOut, code := runCLI(t, "--database-url", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable", "bench")
	require.Equal(t, exitFailure, code)
	require.Contains(t, errOut, "check --database-url, CANONLOG_DATABASE_URL or DATABASE_URL, and that the database is running")
}
