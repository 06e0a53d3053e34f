package canonlogcli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

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
built at, whether it is stale (built by other logic, or never built: run
'{name} rebuild --stale'), its row count, and its last rebuild.`),
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
	Name         string     `json:"name"`
	Version      int        `json:"version"`
	BuiltVersion int        `json:"built_version"`
	Stale        bool       `json:"stale"`
	Rows         int64      `json:"rows"` // -1 when the projection does not list its tables
	BuiltSeq     int64      `json:"built_seq"`
	BuiltAt      *time.Time `json:"built_at"`
}

func runStatus(ctx context.Context, g *globals, output string) error {
	e, err := g.open(ctx, requireSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	rep := statusReport{Database: e.url, Projections: []projectionReport{}}
	if err := e.db.QueryRowxContext(ctx, `SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM event_log`).Scan(&rep.Events, &rep.LastSeq); err != nil {
		return fmt.Errorf("status: read the log: %w", err)
	}
	sts, err := projection.ReadStatus(ctx, e.log, e.reg)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	for _, s := range sts {
		pr := projectionReport{Name: s.Name, Version: s.Version, BuiltVersion: s.BuiltVersion, Stale: s.Stale, BuiltSeq: s.BuiltSeq, Rows: -1}
		if !s.BuiltAt.IsZero() {
			at := s.BuiltAt
			pr.BuiltAt = &at
		}
		p, _ := e.reg.Get(s.Name)
		if t, ok := p.(projection.Tabler); ok {
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
	anyStale := false
	for _, p := range rep.Projections {
		built, last, stale := "-", "never", "no"
		if p.BuiltVersion > 0 {
			built = fmt.Sprint(p.BuiltVersion)
		}
		if p.BuiltAt != nil {
			last = fmt.Sprintf("%s (up to seq %d)", p.BuiltAt.UTC().Format(time.RFC3339), p.BuiltSeq)
		}
		if p.Stale {
			stale, anyStale = "yes", true
		}
		rows := fmt.Sprint(p.Rows)
		if p.Rows < 0 {
			rows = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", p.Name, p.Version, built, stale, rows, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if anyStale {
		fmt.Fprintf(w, "\nstale projections were built by other logic or never built: run '%s rebuild --stale'\n", g.cfg.Name)
	}
	return nil
}
