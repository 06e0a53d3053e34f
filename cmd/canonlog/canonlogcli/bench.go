package canonlogcli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/internal/bench"
	"github.com/canonlog/canonlog/internal/fleetgen"
)

// newBenchCommand mounts the harness of internal/bench: it checks the
// flags, runs, and prints the report.
func newBenchCommand(g *globals) *cobra.Command {
	var (
		cfg    bench.Config
		output string
	)
	cmd := &cobra.Command{
		Use:   "bench [--scenario NAME…] [--events N] [--profile NAME] [--clients N] [--rounds N] [--writers N] [--write-rate R] [--gentle] [--load-baseline D]",
		Short: "Measure canonlog against hand-written SQL on this database",
		Long: `bench measures each canonlog path next to a raw database/sql baseline doing
the same work, alternately for several rounds, and prints the median rates
and their ratio (canonlog ÷ raw) against the target ratio.

Every scenario's data is the history canonlog gen writes with --seed 1 and
the --profile given: realistic (the default: a fleet's control-plane
history, about 0.28 probe_failures rows per event) or dense (every event a
probe result, one row per event: the shape of earlier reports).

It never touches the configured database's data: on PostgreSQL it works in
scratch schemas canonlog_bench_<random>_<n> that it drops at the end (also
on error or interrupt); on SQLite in a scratch directory next to the
configured file (or in $TMPDIR), removed at the end.

Scenarios (` + strings.Join(bench.Scenarios(), ", ") + `) and their sizes, from --events N:
  append-1      N/40 single appends per side per round, one client
  append-16     N/20 single appends per side per round from --clients clients
  append-batch  N/2000 batches of 1,000 events per side per round
  read          streams a log of N events
  rebuild       rebuilds probe_failures over a log of N events
  query         N/100 sets of five gate queries per side per round
  rebuild-load  a log of N mixed events; --writers writers append agent events
                one at a time and a follower tails the log, measured with
                nothing else running (for --load-baseline), then during an
                online rebuild of probe_failures, an offline rebuild and a
                verify: append latency, stalls, tail lag, rebuild figures,
                and the targets met or missed. Writers append as fast as
                they can unless --write-rate caps them; --gentle makes the
                online rebuild gentle (rebuild --gentle). Not a comparison
                with raw SQL, and not run by default: name it with
                --scenario.`,
		Example: `  canonlog bench --database-url 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'
  canonlog bench --scenario rebuild --events 1000000
  canonlog bench --scenario rebuild-load --events 1000000
  canonlog bench --database-url sqlite:canonlog.db --scenario read,query -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range cfg.Scenarios {
				if !slices.Contains(bench.Scenarios(), s) {
					return usagef("--scenario %q: use %s", s, strings.Join(bench.Scenarios(), ", "))
				}
			}
			switch {
			case cfg.Events < 1:
				return usagef("--events is %d, must be at least 1", cfg.Events)
			case cfg.Clients < 1 || cfg.Clients > bench.MaxClients:
				return usagef("--clients is %d, must be between 1 and %d", cfg.Clients, bench.MaxClients)
			case cfg.Rounds < 1 || cfg.Rounds > bench.MaxRounds:
				return usagef("--rounds is %d, must be between 1 and %d", cfg.Rounds, bench.MaxRounds)
			case cfg.Writers < 1 || cfg.Writers > bench.MaxClients:
				return usagef("--writers is %d, must be between 1 and %d", cfg.Writers, bench.MaxClients)
			case !(cfg.WriteRate >= 0):
				return usagef("--write-rate is %v, must be 0 (no cap) or more", cfg.WriteRate)
			case cfg.LoadBaseline <= 0 || cfg.LoadBaseline > bench.MaxLoadBaseline:
				return usagef("--load-baseline is %s, must be more than 0 and at most %s", cfg.LoadBaseline, bench.MaxLoadBaseline)
			}
			if !slices.Contains(fleetgen.Profiles(), cfg.Profile) {
				return usagef("--profile %q: use %s", cfg.Profile, strings.Join(fleetgen.Profiles(), " or "))
			}
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			cfg.DatabaseURL, cfg.Progress = g.resolveDatabaseURL(), g.stderr
			r, err := bench.New(&cfg)
			if err != nil {
				return err
			}
			rep, err := r.Run(cmd.Context())
			var ce *bench.ConnectError
			if errors.As(err, &ce) {
				return fmt.Errorf("%w (check --database-url, CANONLOG_DATABASE_URL or DATABASE_URL, and that the database is running)", err)
			}
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSON(g.stdout, rep)
			}
			return rep.WriteTable(g.stdout)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&cfg.Scenarios, "scenario", nil, "scenarios to run (repeat or comma-separate; default all but rebuild-load): "+strings.Join(bench.Scenarios(), ", "))
	fl.IntVar(&cfg.Events, "events", bench.DefaultEvents, "size of the run: log size for read, rebuild, query and rebuild-load; appends are scaled from it")
	fl.StringVar(&cfg.Profile, "profile", fleetgen.Realistic, "shape of every scenario's data, as canonlog gen's --profile: "+strings.Join(fleetgen.Profiles(), " or "))
	fl.IntVar(&cfg.Clients, "clients", bench.DefaultClients, "concurrent clients of append-16")
	fl.IntVar(&cfg.Rounds, "rounds", bench.DefaultRounds, "rounds per scenario; each round runs both sides, in alternating order")
	fl.IntVar(&cfg.Writers, "writers", bench.DefaultWriters, "rebuild-load: concurrent writers appending one event at a time")
	fl.BoolVar(&cfg.GentleRebuild, "gentle", false, "rebuild-load: the online rebuild reads the next page only once the last is written (rebuild --gentle)")
	fl.Float64Var(&cfg.WriteRate, "write-rate", 0, "rebuild-load: cap on the writers' appends per second together (0: as fast as they can)")
	fl.DurationVar(&cfg.LoadBaseline, "load-baseline", bench.DefaultLoadBaseline, "rebuild-load: how long to measure the writers with no rebuild or verify running")
	fl.BoolVar(&cfg.NoStatistics, "no-statistics", false, "leave the log of read, rebuild and query without planner statistics, as a bulk load or a restore does (PostgreSQL: no ANALYZE, autovacuum off on its tables)")
	fl.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the run (both sides, client side only) to this file, for go tool pprof")
	addOutputFlag(cmd, &output, outputTable, outputJSON)
	return cmd
}
