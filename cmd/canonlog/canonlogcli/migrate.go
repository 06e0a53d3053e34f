package canonlogcli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

func newMigrateCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate up|down|status",
		Short: "Apply, roll back or list the schema migrations",
		Long: `migrate manages canonlog's schema: the core set (event_log and the
projection checkpoints) and each projection's own set (probe_failures),
each with its own goose version table.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return usagef("migrate needs a subcommand: up, down or status")
		},
	}
	var output string
	up := &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration and install new projections",
		Long: g.named(`up applies the pending migrations of the core set and of each projection,
creating the database when it is a new SQLite file, then records a
checkpoint for each projection that is new and has nothing to derive yet
(one added to a log that already holds its events stays stale until
'{name} rebuild --stale').`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			return runMigrateUp(cmd.Context(), g, output)
		},
	}
	addOutputFlag(up, &output, outputTable, outputJSON)
	var yes bool
	down := &cobra.Command{
		Use:   "down --yes",
		Short: "Roll back every migration: drops the event log and all projections",
		Long: `down rolls back every migration of every set, projections first, then the
core: the event log and everything derived from it are dropped. It exists
for scratch and test databases, and asks for --yes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes {
				return usagef("migrate down drops event_log and every projection table, destroying the log: add --yes if you mean it")
			}
			return runMigrateDown(cmd.Context(), g)
		},
	}
	down.Flags().BoolVar(&yes, "yes", false, "really drop everything")
	status := &cobra.Command{
		Use:   "status",
		Short: "List every migration and whether it is applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			return runMigrateStatus(cmd.Context(), g, output)
		},
	}
	addOutputFlag(status, &output, outputTable, outputJSON)
	cmd.AddCommand(up, down, status)
	return cmd
}

type migrationReport struct {
	Set     string `json:"set"`
	Version int64  `json:"version"`
	Source  string `json:"source"`
	Millis  int64  `json:"ms,omitempty"`
}

func runMigrateUp(ctx context.Context, g *globals, output string) error {
	e, err := g.open(ctx, anySchema)
	if err != nil {
		return err
	}
	defer e.Close()
	res, err := projection.Migrate(ctx, e.log, e.reg)
	reports := make([]migrationReport, 0, len(res))
	for _, r := range res {
		reports = append(reports, migrationReport{Set: r.Set, Version: r.Version, Source: r.Source, Millis: r.Duration.Milliseconds()})
	}
	if output == outputJSON {
		if werr := writeJSON(g.stdout, reports); werr != nil && err == nil {
			err = werr
		}
	} else {
		for _, r := range reports {
			fmt.Fprintf(g.stdout, "applied %s %s (%d ms)\n", r.Set, r.Source, r.Millis)
		}
		if err == nil && len(reports) == 0 {
			fmt.Fprintf(g.stdout, "%s: schema up to date\n", e.url)
		} else if err == nil {
			fmt.Fprintf(g.stdout, "%s: %s applied\n", e.url, plural(len(reports), "migration", "migrations"))
		}
	}
	if err != nil {
		return fmt.Errorf("migrate up: %w (the migrations listed before this error were applied)", err)
	}
	return nil
}

func runMigrateDown(ctx context.Context, g *globals) error {
	e, err := g.open(ctx, anySchema)
	if err != nil {
		return err
	}
	defer e.Close()
	res, err := migrations.Down(ctx, e.db, e.reg.MigrationSets()...)
	for _, r := range res {
		fmt.Fprintf(g.stdout, "rolled back %s %s\n", r.Set, r.Source)
	}
	if err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	fmt.Fprintf(g.stdout, "%s: %s rolled back\n", e.url, plural(len(res), "migration", "migrations"))
	return nil
}

type migrationStatusReport struct {
	Set       string     `json:"set"`
	Version   int64      `json:"version"`
	Source    string     `json:"source"`
	Applied   bool       `json:"applied"`
	AppliedAt *time.Time `json:"applied_at"`
}

func runMigrateStatus(ctx context.Context, g *globals, output string) error {
	e, err := g.open(ctx, anySchema)
	if err != nil {
		return err
	}
	defer e.Close()
	sts, err := migrations.Status(ctx, e.db, e.reg.MigrationSets()...)
	if err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	reports := make([]migrationStatusReport, len(sts))
	pending := 0
	for i, s := range sts {
		reports[i] = migrationStatusReport{Set: s.Set, Version: s.Version, Source: s.Source, Applied: s.Applied}
		if s.Applied {
			at := s.AppliedAt.UTC()
			reports[i].AppliedAt = &at
		} else {
			pending++
		}
	}
	if output == outputJSON {
		return writeJSON(g.stdout, reports)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SET\tVERSION\tSOURCE\tAPPLIED")
	for _, r := range reports {
		applied := "pending"
		if r.AppliedAt != nil {
			applied = r.AppliedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Set, r.Version, r.Source, applied)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if pending > 0 {
		fmt.Fprintf(g.stdout, "\n%d pending: run '%s migrate up'\n", pending, g.cfg.Name)
	}
	return nil
}
