package canonlogcli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/fleetgen"
)

type genOptions struct {
	events   int64
	hosts    int
	rollouts int
	profile  string
	// shares are the profile's, overridden by the ratio flags given.
	shares fleetgen.Shares
	seed   uint64
	out    string
}

// genRatioFlags are gen's share flags: each overrides one of the
// profile's shares when given.
var genRatioFlags = []struct {
	name, usage string
	share       func(*fleetgen.Shares) *float64
}{
	{"probe-ratio", "share of events that are probe results", func(s *fleetgen.Shares) *float64 { return &s.Probe }},
	{"fail-ratio", "share of probe results that fail", func(s *fleetgen.Shares) *float64 { return &s.Fail }},
	{"observe-ratio", "share of probe results in observe mode (they never derive rows)", func(s *fleetgen.Shares) *float64 { return &s.Observe }},
}

func newGenCommand(g *globals) *cobra.Command {
	var (
		o      genOptions
		ratios = make([]float64, len(genRatioFlags))
	)
	realistic, _ := fleetgen.DefaultShares(fleetgen.Realistic)
	dense, _ := fleetgen.DefaultShares(fleetgen.Dense)
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Write a synthetic fleet history as NDJSON, for tests and benchmarks",
		Long: g.named(`gen writes a synthetic control-plane history, one append --file entry per
line, spread over --hosts hosts and --rollouts rollouts. The same --seed and
flags give the same bytes; every entry has an event id, so appending the
output twice lands it once. Output streams: a million events take no more
memory than ten. canonlog bench measures the same histories.

Profiles (--profile):
  realistic  a fleet's history (the default): 55% probe results in the
             probe_failures format, most passing (a quarter fail, a tenth
             run in observe mode, a few could not run), the rest other
             agent events (heartbeats, package inventories, logs shipped,
             services restarted) and plan actions, effects, manifest polls,
             verify outcomes, gate decisions and rollout events; Linux and
             Windows hosts, escaped strings (quotes, backslashes, \n,
             \u escapes and raw UTF-8), optional fields sometimes missing
             (observed_at among them). Payloads average about 260 bytes;
             about 0.28 probe_failures rows per event.
  dense      every event a probe result with three controls, a third of
             them failing all three: one row per event, the shape
             canonlog bench used before.

--probe-ratio, --fail-ratio and --observe-ratio override the profile's
shares.`),
		Example: g.named(`  {name} gen --events 100000 | {name} append --file -
  {name} gen --events 1000000 --hosts 5000 --fail-ratio 0.05 --seed 7 > history.ndjson
  {name} gen --profile dense --events 100000 --out dense.ndjson`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ok bool
			if o.shares, ok = fleetgen.DefaultShares(o.profile); !ok {
				return usagef("--profile %q: use %s", o.profile, strings.Join(fleetgen.Profiles(), " or "))
			}
			for k, f := range genRatioFlags {
				if !cmd.Flags().Changed(f.name) {
					continue
				}
				if v := ratios[k]; !(v >= 0 && v <= 1) {
					return usagef("--%s is %v, must be between 0 and 1", f.name, v)
				}
				*f.share(&o.shares) = ratios[k]
			}
			w := g.stdout
			if o.out != "" && o.out != "-" {
				f, err := os.Create(o.out)
				if err != nil {
					return fmt.Errorf("gen: %w", err)
				}
				defer f.Close()
				if err := runGen(cmd.Context(), f, o); err != nil {
					return err
				}
				return f.Close()
			}
			return runGen(cmd.Context(), w, o)
		},
	}
	fl := cmd.Flags()
	numFlag(fl, &o.events, "events", "", 1000, bounds{}, "number of events")
	numFlag(fl, &o.hosts, "hosts", "", fleetgen.DefaultHosts, bounds{min: 1, max: fleetgen.MaxHosts}, "number of hosts")
	numFlag(fl, &o.rollouts, "rollouts", "", fleetgen.DefaultRollouts, bounds{min: 1, max: fleetgen.MaxRollouts}, "number of rollouts")
	fl.StringVar(&o.profile, "profile", fleetgen.Realistic, "shape of the history: "+strings.Join(fleetgen.Profiles(), " or "))
	for k, f := range genRatioFlags {
		// No flag default: the profile's share applies unless the flag is
		// given.
		fl.Float64Var(&ratios[k], f.name, 0, fmt.Sprintf("%s, 0 to 1 (default: the profile's, %v for realistic, %.3g for dense)",
			f.usage, *f.share(&realistic), *f.share(&dense)))
	}
	fl.Uint64Var(&o.seed, "seed", 1, "random seed: the same seed writes the same history")
	fl.StringVar(&o.out, "out", "-", "file to write, - for standard output")
	return cmd
}

func runGen(ctx context.Context, w io.Writer, o genOptions) error {
	gn, err := fleetgen.New(&fleetgen.Config{Seed: o.seed, Profile: o.profile, Hosts: o.hosts, Rollouts: o.rollouts, Shares: &o.shares})
	if err != nil {
		return fmt.Errorf("gen: %w", err)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	for i := range o.events {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("gen: interrupted after %s", plural(i, "event", "events"))
			}
		}
		e := gn.Entry(i)
		line = appendEventJSON(line[:0], eventlog.Event{Kind: e.Kind, TS: e.TS, HostID: e.HostID, RolloutID: e.RolloutID, Payload: e.Payload, EventID: e.EventID}, false)
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("gen: write: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("gen: write: %w", err)
	}
	return nil
}
