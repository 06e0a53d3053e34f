package canonlogcli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

func TestBench(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		// Tiny: every scenario runs, on the real command tree; no timing
		// is asserted.
		out := c.ok("", "bench", "--events", "200", "--rounds", "2", "--clients", "3", "-o", "json")
		var rep benchReport
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Equal(t, backend, rep.Backend)
		require.NotEmpty(t, rep.Scratch)
		var names []string
		for _, s := range rep.Scenarios {
			names = append(names, s.Name)
			require.Len(t, s.CanonlogRuns, 2, s.Name)
			require.Len(t, s.RawRuns, 2, s.Name)
			require.Positive(t, s.Canonlog, s.Name)
			require.Positive(t, s.Raw, s.Name)
			require.Positive(t, s.Ratio, s.Name)
			require.Positive(t, s.PerRound, s.Name)
			require.Equal(t, benchTargets[s.Name], s.Target, s.Name)
			require.Equal(t, s.Ratio >= s.Target, s.Met, s.Name)
		}
		require.Equal(t, benchScenarios, names)

		// The scratch databases are gone, and the configured database was
		// never touched.
		if backend == "postgres" {
			var n int
			require.NoError(t, dbtest.Admin(t).Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE starts_with(nspname, $1)`, rep.Scratch))
			require.Zero(t, n, "scratch schemas %s_* left behind", rep.Scratch)
			require.NoError(t, c.db().Get(&n, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()`))
			require.Zero(t, n, "tables created in the configured schema")
		} else {
			_, err := os.Stat(rep.Scratch)
			require.ErrorIs(t, err, os.ErrNotExist, "scratch directory left behind")
			path, ok := sqliteFile(c.url)
			require.True(t, ok)
			entries, err := os.ReadDir(filepath.Dir(path))
			require.NoError(t, err)
			require.Empty(t, entries, "files left next to the configured database")
		}

		// The table carries one line per scenario asked for, with the peak
		// RSS for rebuild.
		profile := filepath.Join(t.TempDir(), "cpu.out")
		out = c.ok("", "bench", "--events", "100", "--rounds", "1", "--scenario", "read,rebuild", "--cpuprofile", profile)
		fi, err := os.Stat(profile)
		require.NoError(t, err)
		require.Positive(t, fi.Size())
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 4, out)
		require.Contains(t, lines[1], "SCENARIO")
		require.True(t, strings.HasPrefix(lines[2], "read "), out)
		require.True(t, strings.HasPrefix(lines[3], "rebuild "), out)
		require.Contains(t, lines[3], "MiB")
	})
}

func TestBenchUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"bench", "--scenario", "nope"},
		{"bench", "--events", "0"},
		{"bench", "--rounds", "0"},
		{"bench", "--clients", "0"},
		{"bench", "-o", "yaml"},
	} {
		_, errOut, code := runCLI(t, args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, errOut)
	}
}
