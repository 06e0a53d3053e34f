package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/fleetgen"
)

// setup returns a Runner on a fresh database of backend whose scratch
// databases carry the prefix CI's leftover check looks for.
func setup(t *testing.T, b dbtest.Backend, cfg Config) *Runner {
	t.Helper()
	cfg.DatabaseURL = b.URL
	r, err := New(&cfg)
	require.NoError(t, err)
	r.prefix = "canonlog_test_bench"
	return r
}

func TestRunner(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		b := dbtest.New(t, backend)
		ctx := context.Background()

		// Tiny: every scenario runs; no timing is asserted.
		var progress bytes.Buffer
		rep, err := setup(t, b, Config{Events: 200, Rounds: 2, Clients: 3, Progress: &progress}).Run(ctx)
		require.NoError(t, err)
		require.Equal(t, backend, rep.Backend)
		require.Equal(t, Report{Backend: backend, Scratch: rep.Scratch, Profile: fleetgen.Realistic, Events: 200, Rounds: 2, Clients: 3, Scenarios: rep.Scenarios}, *rep)
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
			require.LessOrEqual(t, s.RatioMin, s.Ratio, s.Name)
			require.GreaterOrEqual(t, s.RatioMax, s.Ratio, s.Name)
			require.Equal(t, targets[s.Name], s.Target, s.Name)
			require.Equal(t, s.Ratio >= s.Target, s.Met, s.Name)
		}
		require.Equal(t, DefaultScenarios(), names)
		require.Nil(t, rep.Load, "rebuild-load runs only when named")
		out := progress.String()
		require.Contains(t, out, "bench: "+backend+", scratch ")
		require.Contains(t, out, "bench: filled 200 events in ")
		require.Contains(t, out, "bench: query done: ratio ")

		// The scratch databases are gone, and the configured database was
		// never touched.
		if backend == "postgres" {
			require.True(t, strings.HasPrefix(rep.Scratch, "canonlog_test_bench_"), rep.Scratch)
			var n int
			require.NoError(t, dbtest.Admin(t).Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE starts_with(nspname, $1)`, rep.Scratch))
			require.Zero(t, n, "scratch schemas %s_* left behind", rep.Scratch)
			require.NoError(t, b.Open(t).Get(&n, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()`))
			require.Zero(t, n, "tables created in the configured schema")
		} else {
			_, err := os.Stat(rep.Scratch)
			require.ErrorIs(t, err, os.ErrNotExist, "scratch directory left behind")
			entries, err := os.ReadDir(filepath.Dir(strings.TrimPrefix(b.URL, "sqlite:")))
			require.NoError(t, err)
			require.Empty(t, entries, "files left next to the configured database")
		}

		// Scenarios run in their own order whatever the order asked; the
		// CPU profile is written; rebuild reports its peak RSS.
		profile := filepath.Join(t.TempDir(), "cpu.out")
		rep, err = setup(t, b, Config{Events: 100, Rounds: 1, Scenarios: []string{ScenarioRebuild, ScenarioRead}, CPUProfile: profile, Profile: fleetgen.Dense}).Run(ctx)
		require.NoError(t, err)
		require.Equal(t, fleetgen.Dense, rep.Profile)
		fi, err := os.Stat(profile)
		require.NoError(t, err)
		require.Positive(t, fi.Size())
		require.Len(t, rep.Scenarios, 2)
		require.Equal(t, ScenarioRead, rep.Scenarios[0].Name)
		require.Equal(t, ScenarioRebuild, rep.Scenarios[1].Name)
		require.Positive(t, rep.Scenarios[1].PeakRSS)
	})
}

func TestNew(t *testing.T) {
	t.Parallel()
	r, err := New(nil)
	require.NoError(t, err)
	require.Equal(t, Config{
		DatabaseURL: "sqlite:canonlog.db", Scenarios: DefaultScenarios(), Events: DefaultEvents,
		Clients: DefaultClients, Rounds: DefaultRounds, Writers: DefaultWriters, LoadBaseline: DefaultLoadBaseline,
		Profile: fleetgen.Realistic, Progress: r.cfg.Progress,
	}, r.cfg)

	for name, cfg := range map[string]Config{
		"unknown scenario": {Scenarios: []string{"append-2"}},
		"negative events":  {Events: -1},
		"negative clients": {Clients: -1},
		"too many clients": {Clients: MaxClients + 1},
		"negative rounds":  {Rounds: -1},
		"too many rounds":  {Rounds: MaxRounds + 1},
		"negative writers": {Writers: -1},
		"too many writers": {Writers: MaxClients + 1},
		"long baseline":    {LoadBaseline: MaxLoadBaseline + 1},
		"negative rate":    {WriteRate: -1},
		"unknown profile":  {Profile: "sparse"},
	} {
		_, err := New(&cfg)
		require.Error(t, err, name)
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// Nothing listens on port 1.
	r, err := New(&Config{DatabaseURL: "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5"})
	require.NoError(t, err)
	_, err = r.Run(ctx)
	var ce *ConnectError
	require.ErrorAs(t, err, &ce)

	r, err = New(&Config{DatabaseURL: "mysql://localhost/db"})
	require.NoError(t, err)
	_, err = r.Run(ctx)
	require.ErrorContains(t, err, "unknown scheme")
	require.False(t, errors.As(err, &ce))
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	rep := &Report{Backend: "postgres", Profile: "realistic", Rounds: 3, Scenarios: []Result{
		{Name: "append-1", Unit: "events", PerRound: 500, Canonlog: 1234.5, Raw: 1500.49, Ratio: 0.823, RatioMin: 0.7, RatioMax: 0.9, Target: 0.85},
		{Name: "rebuild", Unit: "events", PerRound: 20000, Canonlog: 31483.7, Raw: 28949.2, Ratio: 1.087, RatioMin: 1.0, RatioMax: 1.2, Target: 1, Met: true, PeakRSS: 22345678},
	}}
	var buf bytes.Buffer
	require.NoError(t, rep.WriteTable(&buf))
	require.Equal(t, `canonlog bench on postgres, realistic data: 3 rounds per scenario, medians; ratio = canonlog ÷ raw
SCENARIO      UNIT    PER_ROUND   CANONLOG/S        RAW/S  RATIO       RANGE  TARGET  MET PEAK_RSS
append-1      events        500         1234         1500   0.82   0.70-0.90 >= 0.85   no
rebuild       events      20000        31484        28949   1.09   1.00-1.20 >= 1.00  yes 21.3 MiB
`, buf.String())
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	xs := []float64{3, 1}
	median(xs)
	require.Equal(t, []float64{3, 1}, xs, "median sorts a copy")
}
