package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/fleetgen"
	"github.com/canonlog/canonlog/internal/scratchdb"
)

// Scenario names, in the order they run.
const (
	ScenarioAppend1     = "append-1"
	ScenarioAppend16    = "append-16"
	ScenarioAppendBatch = "append-batch"
	ScenarioRead        = "read"
	ScenarioRebuild     = "rebuild"
	ScenarioQuery       = "query"
	// ScenarioRebuildLoad is not a comparison with hand-written SQL but
	// rebuilds and a verify under a steady load of appends (LoadResult);
	// it runs only when named.
	ScenarioRebuildLoad = "rebuild-load"
)

var (
	scenarios        = []string{ScenarioAppend1, ScenarioAppend16, ScenarioAppendBatch, ScenarioRead, ScenarioRebuild, ScenarioQuery, ScenarioRebuildLoad}
	defaultScenarios = scenarios[:len(scenarios)-1]
)

// Scenarios returns every scenario's name in the order they run.
func Scenarios() []string { return slices.Clone(scenarios) }

// DefaultScenarios returns the scenarios a run without Config.Scenarios
// runs: all but rebuild-load.
func DefaultScenarios() []string { return slices.Clone(defaultScenarios) }

// targets are the ratios (canonlog ÷ raw) each scenario should reach
// (issue 7; issue 15 raised the rebuild's to 1.5 and the batch's to 0.8).
var targets = map[string]float64{
	ScenarioAppend1: 0.85, ScenarioAppend16: 0.85, ScenarioAppendBatch: 0.8,
	ScenarioRead: 0.8, ScenarioRebuild: 1.5, ScenarioQuery: 0.9,
}

// Defaults and limits of Config.
const (
	DefaultEvents  = 20000
	DefaultClients = 16
	DefaultRounds  = 5
	MaxClients     = 256
	MaxRounds      = 100
)

// Config configures a Runner. A nil *Config takes every default.
type Config struct {
	// DatabaseURL names the database the run works next to, never in:
	// postgres://… (scratch schemas in that database; its user needs the
	// right to create them), sqlite:PATH (a scratch directory next to the
	// file), sqlite::memory: or file:… (a scratch directory in
	// os.TempDir()). Defaults to eventlog.DefaultDatabaseURL.
	DatabaseURL string

	// Scenarios are the scenarios to run (see Scenarios); they run in
	// Scenarios' order whatever the order here. Defaults to
	// DefaultScenarios.
	Scenarios []string

	// Events sizes the run: the log of read, rebuild and query holds
	// Events events; append-1 makes Events/40 appends per side per round
	// (at least 10), append-16 Events/20 (at least Clients), append-batch
	// Events/2000 batches of 1,000 (at least 1), query Events/100 sets of
	// five queries (at least 10); rebuild-load fills a log of its own
	// with Events mixed events. Defaults to DefaultEvents.
	Events int

	// Clients is the number of concurrent clients of append-16, at most
	// MaxClients. Defaults to DefaultClients.
	Clients int

	// Rounds is how often each side of a scenario runs, at most MaxRounds.
	// Defaults to DefaultRounds.
	Rounds int

	// Writers is the number of writers of rebuild-load, each appending
	// one event at a time, at most MaxClients. Defaults to
	// DefaultWriters.
	Writers int

	// LoadBaseline is how long rebuild-load measures its writers with
	// nothing else running, at most MaxLoadBaseline. Defaults to
	// DefaultLoadBaseline.
	LoadBaseline time.Duration

	// WriteRate caps the appends per second of rebuild-load's writers
	// together. Defaults to 0: each writer appends as soon as its last
	// append returned, which saturates the database.
	WriteRate float64

	// GentleRebuild makes rebuild-load's online rebuild gentle
	// (projection.RebuildOptions.Gentle).
	GentleRebuild bool

	// Profile is the shape of every scenario's data, a fleetgen profile:
	// fleetgen.Realistic (a fleet's control-plane history, about 0.28
	// probe_failures rows per event) or fleetgen.Dense (every event a
	// probe result, one row per event: the shape of earlier reports).
	// Defaults to fleetgen.Realistic.
	Profile string

	// NoStatistics leaves the shared log of read, rebuild and query as a
	// bulk load or a restore leaves it: no ANALYZE (nor VACUUM) after the
	// fill, and autovacuum off on its tables, so the planner has no
	// statistics. By default the fill gathers them.
	NoStatistics bool

	// CPUProfile, when set, names a file to write a CPU profile of the
	// run to (both sides; the client side only), for go tool pprof.
	CPUProfile string

	// Progress receives a line when the run starts, when the shared log
	// is filled and when each scenario ends ("bench: …"). Defaults to
	// io.Discard.
	Progress io.Writer
}

// Runner runs benchmarks as configured. Each Run works in scratch
// databases of its own.
type Runner struct {
	cfg Config
	mix mix
	// prefix begins the scratch databases' names; tests set one that CI's
	// leftover check looks for.
	prefix string
}

// New validates cfg and returns a Runner.
func New(cfg *Config) (*Runner, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = eventlog.DefaultDatabaseURL
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = DefaultScenarios()
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(scenarios, s) {
			return nil, fmt.Errorf("bench: scenario %q: use %s", s, strings.Join(scenarios, ", "))
		}
	}
	if c.Events == 0 {
		c.Events = DefaultEvents
	}
	if c.Clients == 0 {
		c.Clients = DefaultClients
	}
	if c.Rounds == 0 {
		c.Rounds = DefaultRounds
	}
	if c.Writers == 0 {
		c.Writers = DefaultWriters
	}
	if c.LoadBaseline == 0 {
		c.LoadBaseline = DefaultLoadBaseline
	}
	if c.Profile == "" {
		c.Profile = fleetgen.Realistic
	}
	if !slices.Contains(fleetgen.Profiles(), c.Profile) {
		return nil, fmt.Errorf("bench: Profile %q: use %s", c.Profile, strings.Join(fleetgen.Profiles(), " or "))
	}
	switch {
	case c.Events < 0:
		return nil, fmt.Errorf("bench: Events is %d: give a positive number, or 0 for %d", c.Events, DefaultEvents)
	case c.Clients < 0 || c.Clients > MaxClients:
		return nil, fmt.Errorf("bench: Clients is %d: give 1 to %d, or 0 for %d", c.Clients, MaxClients, DefaultClients)
	case c.Rounds < 0 || c.Rounds > MaxRounds:
		return nil, fmt.Errorf("bench: Rounds is %d: give 1 to %d, or 0 for %d", c.Rounds, MaxRounds, DefaultRounds)
	case c.Writers < 0 || c.Writers > MaxClients:
		return nil, fmt.Errorf("bench: Writers is %d: give 1 to %d, or 0 for %d", c.Writers, MaxClients, DefaultWriters)
	case !(c.WriteRate >= 0):
		return nil, fmt.Errorf("bench: WriteRate is %v: give a rate in appends per second, or 0 for no limit", c.WriteRate)
	case c.LoadBaseline < 0 || c.LoadBaseline > MaxLoadBaseline:
		return nil, fmt.Errorf("bench: LoadBaseline is %s: give up to %s, or 0 for %s", c.LoadBaseline, MaxLoadBaseline, DefaultLoadBaseline)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	m, err := newMix(c.Profile)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return &Runner{cfg: c, mix: m, prefix: "canonlog_bench"}, nil
}

// ConnectError is returned by Run when the PostgreSQL server named by
// Config.DatabaseURL cannot be reached: check the URL and that the server
// is running.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return e.Err.Error() }

func (e *ConnectError) Unwrap() error { return e.Err }

// Report is a whole run.
type Report struct {
	Backend string `json:"backend"`
	Scratch string `json:"scratch"` // PostgreSQL: the prefix of the scratch schemas; SQLite: the scratch directory
	Profile string `json:"profile"` // the data's fleetgen profile
	Events  int    `json:"events"`
	Rounds  int    `json:"rounds"`
	Clients int    `json:"clients"`
	// NoStatistics: the shared log had no planner statistics.
	NoStatistics bool     `json:"no_statistics"`
	Scenarios    []Result `json:"scenarios"`
	// Load is rebuild-load's result, when it ran.
	Load *LoadResult `json:"load,omitempty"`
}

// Result is one scenario's figures: medians over the rounds.
type Result struct {
	Name         string    `json:"name"`
	Unit         string    `json:"unit"`
	PerRound     int       `json:"per_round"` // events (or queries) each side handles per round
	Canonlog     float64   `json:"canonlog_per_second"`
	Raw          float64   `json:"raw_per_second"`
	Ratio        float64   `json:"ratio"` // median of the per-round ratios
	RatioMin     float64   `json:"ratio_min"`
	RatioMax     float64   `json:"ratio_max"`
	Target       float64   `json:"target"`
	Met          bool      `json:"met"`
	CanonlogRuns []float64 `json:"canonlog_rounds"`
	RawRuns      []float64 `json:"raw_rounds"`
	PeakRSS      uint64    `json:"peak_rss_bytes,omitempty"` // rebuild: the process's VmHWM during canonlog's rebuilds
}

// cpuProfileMu serializes the runs that write a CPU profile.
var cpuProfileMu sync.Mutex

// Run runs the configured scenarios and returns their figures. The
// scratch databases are gone when it returns, whatever the outcome.
func (r *Runner) Run(ctx context.Context) (_ *Report, err error) {
	set, err := scratchdb.New(r.cfg.DatabaseURL, &scratchdb.Config{Prefix: r.prefix})
	if err != nil {
		return nil, err
	}
	rn := &run{cfg: r.cfg, mix: r.mix, set: set}
	defer func() { err = errors.Join(err, rn.close()) }()
	if err := set.Ping(ctx); err != nil {
		return nil, &ConnectError{Err: err}
	}
	where, scratch := "directory "+set.Dir(), set.Dir()
	if set.Dir() == "" {
		where, scratch = "schemas "+set.Name()+"_*", set.Name()
	}
	fmt.Fprintf(r.cfg.Progress, "bench: %s, scratch %s\n", set.Dialect(), where)
	if r.cfg.CPUProfile != "" {
		f, err := os.Create(r.cfg.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		// pprof takes one CPU profile per process: runs that profile in
		// one process (tests of both backends in parallel) take turns.
		cpuProfileMu.Lock()
		defer cpuProfileMu.Unlock()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	rep := &Report{Backend: set.Dialect().String(), Scratch: scratch, Profile: r.cfg.Profile, Events: r.cfg.Events, Rounds: r.cfg.Rounds, Clients: r.cfg.Clients, NoStatistics: r.cfg.NoStatistics}
	for _, name := range scenarios {
		if !slices.Contains(r.cfg.Scenarios, name) {
			continue
		}
		if name == ScenarioRebuildLoad {
			if rep.Load, err = rn.rebuildLoad(ctx); err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("bench interrupted during %s", name)
				}
				return nil, fmt.Errorf("bench %s: %w", name, err)
			}
			fmt.Fprintf(r.cfg.Progress, "bench: %s done\n", name)
			continue
		}
		res, err := rn.scenario(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("bench interrupted during %s", name)
			}
			return nil, fmt.Errorf("bench %s: %w", name, err)
		}
		fmt.Fprintf(r.cfg.Progress, "bench: %s done: ratio %.2f\n", name, res.Ratio)
		rep.Scenarios = append(rep.Scenarios, res)
	}
	return rep, nil
}

// WriteTable writes the report as a table: a title line, then one line per
// scenario; then rebuild-load's tables, when it ran.
func (rep *Report) WriteTable(w io.Writer) error {
	if len(rep.Scenarios) > 0 || rep.Load == nil {
		if err := rep.writeScenarios(w); err != nil {
			return err
		}
	}
	if rep.Load == nil {
		return nil
	}
	if len(rep.Scenarios) > 0 {
		if _, err := fmt.Fprintln(w); err != nil {
			return err
		}
	}
	return rep.Load.writeTable(w, rep.Backend)
}

func (rep *Report) writeScenarios(w io.Writer) error {
	tw := bufio.NewWriter(w)
	rounds := "rounds"
	if rep.Rounds == 1 {
		rounds = "round"
	}
	stats := ""
	if rep.NoStatistics {
		stats = " without planner statistics"
	}
	fmt.Fprintf(tw, "canonlog bench on %s, %s data%s: %d %s per scenario, medians; ratio = canonlog ÷ raw\n", rep.Backend, rep.Profile, stats, rep.Rounds, rounds)
	fmt.Fprintf(tw, "%-13s %-7s %9s %12s %12s %6s %11s %7s %4s %s\n", "SCENARIO", "UNIT", "PER_ROUND", "CANONLOG/S", "RAW/S", "RATIO", "RANGE", "TARGET", "MET", "PEAK_RSS")
	for _, s := range rep.Scenarios {
		met, rss := "no", ""
		if s.Met {
			met = "yes"
		}
		if s.PeakRSS > 0 {
			rss = fmt.Sprintf("%.1f MiB", float64(s.PeakRSS)/(1<<20))
		}
		line := fmt.Sprintf("%-13s %-7s %9d %12.0f %12.0f %6.2f %11s %7s %4s %s", s.Name, s.Unit, s.PerRound,
			s.Canonlog, s.Raw, s.Ratio, fmt.Sprintf("%.2f-%.2f", s.RatioMin, s.RatioMax),
			fmt.Sprintf(">= %.2f", s.Target), met, rss)
		fmt.Fprintln(tw, strings.TrimRight(line, " "))
	}
	return tw.Flush()
}
