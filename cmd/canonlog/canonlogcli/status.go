package canonlogcli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pgstat"
	"github.com/canonlog/canonlog/projection"
)

type statusOptions struct {
	output string
	// check turns what needs an operator into exit code exitUnhealthy:
	// a stale projection, a stopped consumer, a consumer past a lag limit.
	check        bool
	maxLagEvents int64 // 0: no limit
	maxLag       int64 // seconds; 0: no limit
}

func newStatusCommand(g *globals) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the log's head, each projection's state, each consumer's lag; --check for health checks",
		Long: g.named(`status shows the number of events, the last seq and its ts, and for each
projection: the version the code registers, the version the live view was
built at, whether it is stale (built by other logic, never built, or
missed events appended with --allow-drift: run '{name} rebuild --stale'), its row
count, and its last rebuild. Projections that the database records but
this binary does not register (another binary, such as the service that
owns them, does) are listed as such and not checked.

On PostgreSQL it also shows each online rebuild the database holds: one
running, with its phase and progress, or the schemas of one that was
stopped, which the next rebuild or '{name} migrate up' drops.

It shows each consumer's position and lag (as '{name} consumers status'
does), and on PostgreSQL the tail horizon: the oldest transaction in
progress on the server, which holds back every follower and consumer
until it ends, with its age.

With --check it exits with code 4 when a projection is stale (or not
installed), when a consumer stopped on an event its handler kept failing
on, or when a consumer lags more than --max-lag-events events or
--max-lag seconds, and says which and why on stderr: for health checks
and probes.`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON); err != nil {
				return err
			}
			if !o.check && (o.maxLagEvents > 0 || o.maxLag > 0) {
				return usagef("--max-lag-events and --max-lag are limits for --check: add --check")
			}
			return runStatus(cmd.Context(), g, o)
		},
	}
	addOutputFlag(cmd, &o.output, outputTable, outputJSON)
	cmd.Flags().BoolVar(&o.check, "check", false, "exit with code 4 when a projection is stale or a consumer stopped or lags past a limit, saying why on stderr")
	numFlag(cmd.Flags(), &o.maxLagEvents, "max-lag-events", "", 0, bounds{min: 1, zero: "no limit"},
		"with --check: the most events of its kinds a consumer may lag behind")
	numFlag(cmd.Flags(), &o.maxLag, "max-lag", "", 0, bounds{min: 1, zero: "no limit"},
		"with --check: the most seconds a consumer may lag behind (the age of the oldest event it has yet to handle)")
	return cmd
}

type statusReport struct {
	Database string `json:"database"`
	Events   int64  `json:"events"`
	// LastSeq is the log's head: the highest committed seq.
	LastSeq int64 `json:"last_seq"`
	// LastTS is the head event's ts; null for an empty log.
	LastTS      *time.Time         `json:"last_ts"`
	Projections []projectionReport `json:"projections"`
	Consumers   []consumerReport   `json:"consumers"`
	// Horizon is the transaction that holds followers back (PostgreSQL
	// only); null when none is in progress, and on SQLite.
	Horizon *horizonReport `json:"horizon"`

	postgres bool // the table has a horizon line: SQLite has no horizon
}

// horizonReport is a pgstat.Horizon.
type horizonReport struct {
	TxID     uint64 `json:"tx_id"`
	PID      int    `json:"pid"` // 0 for a prepared transaction, or when unknown
	State    string `json:"state"`
	Database string `json:"database"`
	// State is "", StartedAt null and AgeSeconds 0 when the role may
	// not see the session's details (see pgstat.Horizon.Started).
	StartedAt  *time.Time `json:"started_at"`
	AgeSeconds float64    `json:"age_seconds"`
}

func newHorizonReport(h pgstat.Horizon) *horizonReport {
	rep := &horizonReport{TxID: h.TxID, PID: h.PID, State: h.State, Database: h.Database, AgeSeconds: h.Age.Seconds()}
	if !h.Started.IsZero() {
		at := h.Started.UTC()
		rep.StartedAt = &at
	}
	return rep
}

type projectionReport struct {
	Name string `json:"name"`
	// Registered is false for a projection the database records that this
	// binary does not register: another binary owns it, and its version,
	// staleness and rows are not checked here.
	Registered bool `json:"registered"`
	// Installed is false for a projection this binary registers that the
	// database never installed ('migrate up' installs it).
	Installed    bool       `json:"installed"`
	Version      int        `json:"version"`
	BuiltVersion int        `json:"built_version"`
	Stale        bool       `json:"stale"`
	Rows         int64      `json:"rows"` // -1 when the projection does not list its tables or is not registered
	BuiltSeq     int64      `json:"built_seq"`
	BuiltAt      *time.Time `json:"built_at"`
	// Kinds are the kinds it consumes; ["*"] for every kind.
	Kinds    []string `json:"kinds"`
	DriftSeq int64    `json:"drift_seq"`
	// Async reports an asynchronous projection, maintained by its consumer
	// after commit.
	Async bool `json:"async"`
	// Rebuild is the projection's online rebuild that the database holds
	// (PostgreSQL only); null when there is none.
	Rebuild *rebuildStateReport `json:"rebuild"`
}

// rebuildStateReport is a projection.RebuildState.
type rebuildStateReport struct {
	// Running is false for the schemas a stopped rebuild left behind.
	Running bool `json:"running"`
	// Phase is "build", "catch-up" or "swap"; "" when unknown (the role
	// may not read the rebuild's schema, or the swap is done). Done,
	// Total, StartedAt and UpdatedAt are zero or null then.
	Phase     string     `json:"phase"`
	Done      int64      `json:"done"`
	Total     int64      `json:"total"`
	StartedAt *time.Time `json:"started_at"`
	UpdatedAt *time.Time `json:"updated_at"`
	Schemas   []string   `json:"schemas"`
}

func newRebuildStateReport(r *projection.RebuildState) *rebuildStateReport {
	if r == nil {
		return nil
	}
	rep := &rebuildStateReport{Running: r.Running, Phase: string(r.Phase), Done: r.Done, Total: r.Total, Schemas: r.Schemas}
	if !r.StartedAt.IsZero() {
		at := r.StartedAt.UTC()
		rep.StartedAt = &at
	}
	if !r.UpdatedAt.IsZero() {
		at := r.UpdatedAt.UTC()
		rep.UpdatedAt = &at
	}
	return rep
}

func runStatus(ctx context.Context, g *globals, o statusOptions) error {
	e, err := g.open(ctx, readSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	rep := statusReport{Database: e.url, Projections: []projectionReport{}}
	// Counted before the last seq is read: every event counted then has a
	// seq at most the last, so the report never shows more events than its
	// last seq allows, whatever commits in between.
	if rep.Events, err = e.log.Count(ctx, eventlog.Filter{}); err != nil {
		return fmt.Errorf("status: read the log: %w", err)
	}
	if rep.LastSeq, err = e.log.LastSeq(ctx); err != nil {
		return fmt.Errorf("status: read the log: %w", err)
	}
	if rep.LastSeq > 0 {
		head, err := e.log.Get(ctx, rep.LastSeq)
		if err != nil {
			return fmt.Errorf("status: read the log: %w", err)
		}
		ts := head.TS.UTC()
		rep.LastTS = &ts
	}
	sts, err := e.m.Status(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	for _, s := range sts {
		pr := projectionReport{Name: s.Name, Registered: s.Registered, Installed: s.Installed, Version: s.Version, BuiltVersion: s.BuiltVersion,
			Stale: s.Stale, BuiltSeq: s.BuiltSeq, Rows: -1, Kinds: kindStrings(s), DriftSeq: s.DriftSeq, Async: s.Async, Rebuild: newRebuildStateReport(s.Rebuild)}
		if !s.BuiltAt.IsZero() {
			at := s.BuiltAt
			pr.BuiltAt = &at
		}
		p, _ := e.reg.Get(s.Name)
		if t, ok := p.(projection.Tabler); ok && s.Installed {
			pr.Rows = 0
			for _, table := range t.Tables() {
				var n int64
				if err := e.db.QueryRowxContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
					return fmt.Errorf("status: count rows of %s: %w", table, err)
				}
				pr.Rows += n
			}
		}
		rep.Projections = append(rep.Projections, pr)
	}
	cs, err := consumer.ReadStatus(ctx, e.log)
	if err != nil {
		return fmt.Errorf("status: %w", e.consumersError(err))
	}
	rep.Consumers = newConsumerReports(cs)
	backend, err := eventlog.BackendOf(e.db)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if rep.postgres = backend == eventlog.Postgres; rep.postgres {
		h, ok, err := pgstat.ReadHorizon(ctx, e.db)
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		if ok {
			rep.Horizon = newHorizonReport(h)
		}
	}
	if o.output == outputJSON {
		err = writeJSON(g.stdout, rep)
	} else {
		err = writeStatusTable(g, rep)
	}
	if err != nil || !o.check {
		return err
	}
	if problems := rep.problems(o, g.cfg.Name); len(problems) > 0 {
		return exitCodeError{exitUnhealthy, fmt.Errorf("status --check: %s", strings.Join(problems, "; "))}
	}
	return nil
}

// problems lists what status --check reports: stale projections,
// stopped consumers, consumers past the lag limits of o.
func (rep statusReport) problems(o statusOptions, name string) []string {
	var out []string
	for _, p := range rep.Projections {
		rebuild := fmt.Sprintf("run '%s rebuild --stale'", name)
		switch {
		case !p.Registered || !p.Stale:
		case !p.Installed:
			out = append(out, fmt.Sprintf("projection %s is not installed: run '%s migrate up'", p.Name, name))
		case p.DriftSeq > p.BuiltSeq:
			out = append(out, fmt.Sprintf("projection %s is stale (seq %d was appended without it): %s", p.Name, p.DriftSeq, rebuild))
		case p.BuiltVersion == 0:
			out = append(out, fmt.Sprintf("projection %s is stale (never built): %s", p.Name, rebuild))
		default:
			out = append(out, fmt.Sprintf("projection %s is stale (built at version %d, registered at version %d): %s", p.Name, p.BuiltVersion, p.Version, rebuild))
		}
	}
	for _, c := range rep.Consumers {
		if c.Stopped {
			out = append(out, fmt.Sprintf("consumer %s stopped on event %d: %s", c.Name, c.FailedSeq, c.Failure))
		}
		if o.maxLagEvents > 0 && c.LagEvents > o.maxLagEvents {
			out = append(out, fmt.Sprintf("consumer %s lags %d events behind, more than --max-lag-events %d", c.Name, c.LagEvents, o.maxLagEvents))
		}
		if o.maxLag > 0 && c.LagSeconds > float64(o.maxLag) {
			out = append(out, fmt.Sprintf("consumer %s lags %.1f s behind, more than --max-lag %d", c.Name, c.LagSeconds, o.maxLag))
		}
	}
	return out
}

func writeStatusTable(g *globals, rep statusReport) error {
	w := g.stdout
	fmt.Fprintf(w, "database: %s\n", rep.Database)
	fmt.Fprintf(w, "events:   %d (last seq %d)\n", rep.Events, rep.LastSeq)
	if rep.LastTS != nil {
		fmt.Fprintf(w, "last ts:  %s\n", rep.LastTS.Format(time.RFC3339Nano))
	}
	if rep.postgres {
		fmt.Fprintf(w, "horizon:  %s\n", describeHorizon(rep.Horizon))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTION\tVERSION\tBUILT VERSION\tSTALE\tROWS\tLAST REBUILD")
	anyStale, anyDrift, anyOther, anyMissing, anyAsync := false, false, false, false, false
	for _, p := range rep.Projections {
		version, built, last, stale, rows := fmt.Sprint(p.Version), "-", "never", "no", fmt.Sprint(p.Rows)
		if p.BuiltVersion > 0 {
			built = fmt.Sprint(p.BuiltVersion)
		}
		if p.BuiltAt != nil {
			last = fmt.Sprintf("%s (up to seq %d)", p.BuiltAt.UTC().Format(time.RFC3339), p.BuiltSeq)
		}
		switch {
		case !p.Registered:
			version, stale, anyOther = "-", "registered by another binary: not checked", true
		case !p.Installed:
			stale, last, anyMissing = "not installed", "-", true
		case p.Stale && p.DriftSeq > p.BuiltSeq:
			stale, anyStale, anyDrift = fmt.Sprintf("yes (seq %d appended without it)", p.DriftSeq), true, true
		case p.Stale:
			stale, anyStale = "yes", true
		}
		if p.Rows < 0 {
			rows = "-"
		}
		if p.Async {
			version, anyAsync = version+" (async)", true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, version, built, stale, rows, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	first := true
	for _, p := range rep.Projections {
		if p.Rebuild == nil {
			continue
		}
		if first {
			fmt.Fprintln(w)
			first = false
		}
		fmt.Fprintf(w, "%s: %s\n", p.Name, describeRebuild(p.Rebuild, g.cfg.Name))
	}
	if len(rep.Consumers) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CONSUMER\tHANDLED_SEQ\tLAG_EVENTS\tLAG_SECONDS\tSTOPPED")
		for _, c := range rep.Consumers {
			stopped := "no"
			if c.Stopped {
				stopped = fmt.Sprintf("on event %d", c.FailedSeq)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%s\n", c.Name, c.HandledSeq, c.LagEvents, c.LagSeconds, stopped)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if anyStale {
		fmt.Fprintf(w, "\nstale projections were built by other logic, never built")
		if anyDrift {
			fmt.Fprint(w, ", or missed events appended with --allow-drift")
		}
		fmt.Fprintf(w, ": run '%s rebuild --stale'\n", g.cfg.Name)
	}
	if anyAsync {
		fmt.Fprintf(w, "\nasync projections are maintained after commit by a consumer of the same name: '%s consumers status' shows how far behind it is\n", g.cfg.Name)
	}
	if anyMissing {
		fmt.Fprintf(w, "\nprojections not installed in this database: '%s migrate up' installs them; until then '%s append' refuses the kinds they consume\n", g.cfg.Name, g.cfg.Name)
	}
	if anyOther {
		fmt.Fprintf(w, "\nprojections registered by another binary (such as the service that owns them) are not checked here: operate them with that binary; '%s append' refuses the kinds they consume\n", g.cfg.Name)
	}
	return nil
}

// describeHorizon says which transaction holds followers back.
func describeHorizon(h *horizonReport) string {
	if h == nil {
		return "no transaction in progress holds followers back"
	}
	who := fmt.Sprintf("pid %d", h.PID)
	if h.PID == 0 {
		who = "a prepared transaction"
	}
	if h.State != "" && h.PID != 0 {
		who += ", " + h.State
	}
	if h.Database != "" {
		who += ", database " + h.Database
	}
	age := "age unknown"
	if h.StartedAt != nil {
		age = fmt.Sprintf("running for %.1f s", h.AgeSeconds)
	}
	return fmt.Sprintf("transaction %d (%s) holds followers back, %s", h.TxID, who, age)
}

// describeRebuild says what an online rebuild that the database holds is
// doing, or that it was stopped.
func describeRebuild(r *rebuildStateReport, name string) string {
	if !r.Running {
		return fmt.Sprintf("leftover from a stopped rebuild: %s %s, dropped by the next rebuild or '%s migrate up'",
			pluralWord(len(r.Schemas), "schema", "schemas"), strings.Join(r.Schemas, ", "), name)
	}
	if r.Phase == "" {
		return fmt.Sprintf("rebuilding online: progress unknown (%s %s)", pluralWord(len(r.Schemas), "schema", "schemas"), strings.Join(r.Schemas, ", "))
	}
	s := fmt.Sprintf("rebuilding online: %s %d/%d", r.Phase, r.Done, r.Total)
	if r.StartedAt != nil {
		s += " since " + r.StartedAt.Format(time.RFC3339)
	}
	return s
}

// pluralWord is the word for n things, without the number.
func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// kindStrings lists the kinds a projection consumes; "*" for every kind.
func kindStrings(s projection.Status) []string {
	if s.AllKinds {
		return []string{"*"}
	}
	out := make([]string, len(s.Kinds))
	for i, k := range s.Kinds {
		out[i] = string(k)
	}
	return out
}
