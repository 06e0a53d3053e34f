package canonlogcli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/redact"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

func newMigrateCommand(g *globals) *cobra.Command {
	name := g.cfg.Name
	cmd := &cobra.Command{
		Use:   "migrate up|down|status",
		Short: "Apply, roll back or list the schema migrations",
		Long: `migrate manages canonlog's schema: the core set (event_log and the
projection checkpoints) and the own set of each projection that brings
tables, each with its own goose version table.`,
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
'{name} rebuild --stale'). On PostgreSQL it last drops the schemas that
online rebuilds left behind when they were stopped ('{name} status' shows
them), never those of a rebuild that is running.`),
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
		Long: fmt.Sprintf(`down rolls back every migration of every set, projections first, then the
core: the event log and everything derived from it are dropped. It exists
for scratch and test databases.

It first shows what it would roll back; without --yes it stops there
(exit 2). It refuses, before changing anything, a database that holds
the migrations of projections %[1]s does not register (a service's own):
roll those back first with the binary that registers them.`, name),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMigrateDown(cmd.Context(), g, yes)
		},
	}
	down.Flags().BoolVar(&yes, "yes", false, "really drop everything")
	status := &cobra.Command{
		Use:   "status",
		Short: "List every migration and whether it is applied",
		Long: `status lists the migrations of every set and when each was applied. It
only reads: it creates no table, takes no lock, and refuses a SQLite file
that does not exist rather than creating it.`,
		Args: cobra.NoArgs,
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
	res, err := e.m.Migrate(ctx)
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

// openState opens the database named by the URL flags to read its
// migration state, creating and writing nothing. A sqlite:PATH whose file
// does not exist is refused before anything opens it (opening would
// create it). Other SQLite files are opened with mode=ro, so that SQLite
// itself refuses any write, the switch to WAL that eventlog.OpenDB makes
// included; it may leave its empty -wal and -shm files beside a WAL
// database, which the next writer removes. A URL that names its own mode
// keeps it. PostgreSQL is opened as usual: the readers only read.
func (g *globals) openState(ctx context.Context) (*sqlx.DB, string, error) {
	raw := g.resolveDatabaseURL()
	if err := g.requireFile(raw); err != nil {
		return nil, "", err
	}
	db, err := eventlog.OpenDB(ctx, readOnlyURL(raw))
	if err != nil {
		return nil, "", fmt.Errorf("%w (%s)", err, connectHint(raw, err))
	}
	return db, redact.URL(raw), nil
}

// readOnlyURL adds mode=ro to a SQLite file URL that names no mode.
func readOnlyURL(raw string) string {
	if !strings.HasPrefix(raw, "sqlite:") && !strings.HasPrefix(raw, "file:") || strings.Contains(raw, ":memory:") {
		return raw
	}
	_, query, hasQuery := strings.Cut(raw, "?")
	if q, err := url.ParseQuery(query); err == nil && q.Has("mode") {
		return raw
	}
	if !hasQuery {
		return raw + "?mode=ro"
	}
	return raw + "&mode=ro"
}

func runMigrateDown(ctx context.Context, g *globals, yes bool) error {
	reg, err := g.newRegistry()
	if err != nil {
		return err
	}
	sets := reg.MigrationSets()
	var (
		db    *sqlx.DB
		where string // the URL, redacted
	)
	if yes {
		// Rolling back writes; the file must exist all the same (there is
		// nothing to roll back in a file that is not there).
		e, err := g.openExisting(ctx)
		if err != nil {
			return err
		}
		defer e.Close()
		db, where = e.db, e.url
	} else {
		if path, ok := eventlog.SQLiteFile(g.resolveDatabaseURL()); ok {
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				// Without --yes the answer is a usage error, as ever.
				return usagef("migrate down rolls back only with --yes, and there is no database at %s to roll back: nothing was created", path)
			}
		}
		db, where, err = g.openState(ctx)
		if err != nil {
			return err
		}
		defer db.Close()
	}

	plan, err := migrations.PlanDown(ctx, db, sets...)
	if err != nil {
		return g.downError(reg, err)
	}
	if len(plan) == 0 {
		fmt.Fprintf(g.stdout, "%s: nothing to roll back\n", where)
		return nil
	}
	printDownPlan(g, reg, where, plan, yes)
	if !yes {
		return usagef("migrate down drops what is listed above, the event log with every event included: add --yes if you mean it")
	}

	res, err := migrations.Down(ctx, db, sets...)
	for _, r := range res {
		fmt.Fprintf(g.stdout, "rolled back %s %s (%d ms)\n", r.Set, r.Source, r.Duration.Milliseconds())
	}
	if err != nil {
		return g.downError(reg, err)
	}
	fmt.Fprintf(g.stdout, "%s: %s rolled back\n", where, plural(len(res), "migration", "migrations"))
	return nil
}

// openExisting opens the database as open(ctx, anySchema) does, but
// refuses a sqlite:PATH whose file does not exist rather than creating
// it.
func (g *globals) openExisting(ctx context.Context) (*env, error) {
	if err := g.requireFile(g.resolveDatabaseURL()); err != nil {
		return nil, err
	}
	return g.open(ctx, anySchema)
}

// requireFile refuses a sqlite:PATH URL whose file does not exist.
func (g *globals) requireFile(raw string) error {
	path, ok := eventlog.SQLiteFile(raw)
	if !ok {
		return nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no database at %s: nothing was created (create it with '%s migrate up', or pass --database-url)", path, g.cfg.Name)
	}
	return nil
}

// printDownPlan shows what migrate down rolls back: each migration, then
// the projections and the core tables that go with them.
func printDownPlan(g *globals, reg *projection.Registry, where string, plan []migrations.DownStep, yes bool) {
	if yes {
		fmt.Fprintf(g.stdout, "rolling back on %s:\n", where)
	} else {
		fmt.Fprintf(g.stdout, "migrate down would roll back on %s:\n", where)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SET\tVERSION\tSOURCE\tAPPLIED")
	var sets []string
	core := false
	for _, s := range plan {
		applied := "-"
		if !s.AppliedAt.IsZero() {
			applied = s.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", s.Set, s.Version, s.Source, applied)
		if s.Set == "core" {
			core = true
		} else if !slices.Contains(sets, s.Set) {
			sets = append(sets, s.Set)
		}
	}
	_ = tw.Flush()

	tables := map[string][]string{}
	for _, p := range reg.All() {
		if t, ok := p.(projection.Tabler); ok {
			tables[p.Name()] = t.Tables()
		}
	}
	var drops []string
	for _, s := range sets {
		if ts := tables[s]; len(ts) > 0 {
			drops = append(drops, fmt.Sprintf("projection %s (%s)", s, strings.Join(ts, ", ")))
		} else {
			drops = append(drops, "projection "+s)
		}
	}
	if core {
		drops = append(drops, "core (event_log with every event, canonlog_projections, canonlog_consumers with their positions)")
	}
	fmt.Fprintf(g.stdout, "drops: %s\n", strings.Join(drops, "; "))
}

// downError explains an error of migrate down with what to run next.
func (g *globals) downError(reg *projection.Registry, err error) error {
	var (
		unknown *migrations.UnknownSetsError
		partial *migrations.PartialError
	)
	switch {
	case errors.As(err, &unknown):
		known := "no projection with tables of its own"
		if sets := reg.MigrationSets(); len(sets) > 0 {
			names := make([]string, len(sets))
			for i, s := range sets {
				names[i] = s.Name
			}
			known = "only " + strings.Join(names, ", ")
		}
		return fmt.Errorf("migrate down: %w; %s registers %s; then run '%s migrate down --yes' again",
			err, g.cfg.Name, known, g.cfg.Name)
	case errors.As(err, &partial):
		return fmt.Errorf("migrate down: %w; to continue: '%s migrate down --yes', to restore: '%s migrate up'",
			err, g.cfg.Name, g.cfg.Name)
	}
	return fmt.Errorf("migrate down: %w", err)
}

type migrationStatusReport struct {
	Set       string     `json:"set"`
	Version   int64      `json:"version"`
	Source    string     `json:"source"`
	Applied   bool       `json:"applied"`
	AppliedAt *time.Time `json:"applied_at"`
}

func runMigrateStatus(ctx context.Context, g *globals, output string) error {
	reg, err := g.newRegistry()
	if err != nil {
		return err
	}
	db, _, err := g.openState(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	sets := reg.MigrationSets()
	sts, err := migrations.Status(ctx, db, sets...)
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
	// Sets another binary installed are not listed above: say so.
	installed, err := migrations.InstalledSets(ctx, db)
	if err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	var foreign []string
	for _, name := range installed {
		if !slices.ContainsFunc(sets, func(s migrations.Set) bool { return s.Name == name }) {
			foreign = append(foreign, name)
		}
	}
	if len(foreign) > 0 {
		fmt.Fprintf(g.stdout, "\nother migration sets in this database, not registered by %s: %s\n", g.cfg.Name, strings.Join(foreign, ", "))
	}
	if pending > 0 {
		fmt.Fprintf(g.stdout, "\n%d pending: run '%s migrate up'\n", pending, g.cfg.Name)
	}
	return nil
}
