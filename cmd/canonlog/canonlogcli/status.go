package canonlogcli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

type statusOptions struct {
	output string
}

func newStatusCommand(g *globals) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the log's size and each projection's state",
		Long: g.named(`status shows the number of events and the last seq, and for each
projection: the version the code registers, the version the live view was
built at, whether it is stale (built by other logic, never built, or
missed events appended with --allow-drift: run '{name} rebuild --stale'), its row
count, and its last rebuild. Projections that the database records but
this binary does not register (another binary, such as the service that
owns them, does) are listed as such and not checked.

On PostgreSQL it also shows each online rebuild the database holds: one
running, with its phase and progress, or the schemas of one that was
stopped, which the next rebuild or '{name} migrate up' drops.`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON); err != nil {
				return err
			}
			return runStatus(cmd.Context(), g, o.output)
		},
	}
	addOutputFlag(cmd, &o.output, outputTable, outputJSON)
	return cmd
}

type statusReport struct {
	Database    string             `json:"database"`
	Events      int64              `json:"events"`
	LastSeq     int64              `json:"last_seq"`
	Projections []projectionReport `json:"projections"`
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

func runStatus(ctx context.Context, g *globals, output string) error {
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
	if output == outputJSON {
		return writeJSON(g.stdout, rep)
	}
	w := g.stdout
	fmt.Fprintf(w, "database: %s\n", rep.Database)
	fmt.Fprintf(w, "events:   %d (last seq %d)\n\n", rep.Events, rep.LastSeq)
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
