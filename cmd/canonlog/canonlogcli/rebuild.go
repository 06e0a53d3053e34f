package canonlogcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

type rebuildOptions struct {
	names     []string
	all       bool
	stale     bool
	offline   bool
	gentle    bool
	batchSize int
	progress  string
	output    string
}

func newRebuildCommand(g *globals) *cobra.Command {
	var o rebuildOptions
	cmd := &cobra.Command{
		Use:   "rebuild [NAME…] [--all] [--stale] [--offline | --gentle]",
		Short: "Re-derive projections from the log",
		Long: g.named(`rebuild replays the whole log from seq 1 into projections. By default
each is rebuilt online: into a copy beside the live view while appends go
on (the build), then the events appended meanwhile (catch-up rounds), then
the copy is swapped in under the projection's lock, held only for the last
events (the swap). A projection the copy cannot carry (one that does not
list its tables, or whose tables have triggers, views or other things the
copy would lose) is rebuilt offline, and the summary says why.

--offline rebuilds in one transaction that empties the view and replays
the log under the projection's lock: appends of its kinds wait for it to
end (on SQLite every append waits, up to 10 s).

--gentle slows an online rebuild on PostgreSQL down to spare the appends
going on beside it: it reads the next page of the log only once the last
is written to the copy, so it keeps about one processor core busy
instead of two.

Either way a failed or interrupted rebuild leaves the old view as it was.
Name the projections, or use --all, or --stale for those whose version
changed or that were never built. Progress goes to stderr, phase by
phase: a bar on a terminal, a plain line every few seconds otherwise.`),
		Example: g.named(`  {name} rebuild probe_failures
  {name} rebuild --stale
  {name} rebuild --all --progress lines
  {name} rebuild probe_failures --offline
  {name} rebuild probe_failures --gentle`),
		Args:              projectionArgs(g),
		ValidArgsFunction: completeProjections(g.cfg),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			switch {
			case len(args) == 0 && !o.all && !o.stale:
				return usagef("name the projections to rebuild (%s), or use --all or --stale", strings.Join(projectionNames(g.cfg), ", "))
			case len(args) > 0 && o.all:
				return usagef("--all rebuilds every projection: drop the names, or drop --all")
			case o.gentle && o.offline:
				return usagef("--gentle paces an online rebuild, and --offline asks for an offline one: drop one of them")
			}
			if err := checkProgress(o.progress); err != nil {
				return err
			}
			if err := checkOutput(o.output, outputTable, outputJSON); err != nil {
				return err
			}
			return runRebuild(cmd.Context(), g, o)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&o.all, "all", false, "rebuild every projection")
	fl.BoolVar(&o.stale, "stale", false, "rebuild only stale projections (of those named, or of all)")
	fl.BoolVar(&o.offline, "offline", false, "rebuild in one transaction under the projection's lock: appends of its kinds wait for the whole rebuild")
	fl.BoolVar(&o.gentle, "gentle", false, "online on PostgreSQL: read the next page only once the last is written (slower, kinder to appends running beside it)")
	numFlag(fl, &o.batchSize, "batch-size", "", 0,
		bounds{min: 1, max: eventlog.MaxPageSize, zero: fmt.Sprintf("the default, %d", eventlog.DefaultPageSize)},
		"events per page and per batch apply")
	addProgressFlag(cmd, &o.progress, "progress on stderr: auto (bar on a terminal, else lines), bar, lines, none")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON)
	return cmd
}

// addProgressFlag adds --progress, completed in the shell.
func addProgressFlag(cmd *cobra.Command, dst *string, usage string) {
	cmd.Flags().StringVar(dst, "progress", progressAuto, usage)
	completeFlag(cmd, "progress", fixedCompletions(progressAuto, progressBar, progressLines, progressNone))
}

func checkProgress(p string) error {
	if !slices.Contains([]string{progressAuto, progressBar, progressLines, progressNone}, p) {
		return usagef("--progress is %q: use auto, bar, lines or none", p)
	}
	return nil
}

// namesError turns the Manager's refusal of a projection name this
// binary does not register (unknown, or another binary's) into a usage
// error, and returns nil for any other error.
func namesError(err error) error {
	if errors.Is(err, projection.ErrNotInstalled) {
		return usageError{fmt.Errorf("%w (run 'migrate up')", err)}
	}
	if errors.Is(err, projection.ErrUnknownProjection) || errors.Is(err, projection.ErrUnregistered) {
		return usageError{err}
	}
	return nil
}

// noteUnregistered tells on w which projections the database records that
// this binary does not register, and so were not rebuilt or verified.
func noteUnregistered(ctx context.Context, e *env, w io.Writer, done string) {
	sts, err := e.m.Status(ctx)
	if err != nil {
		return // the command itself succeeded; the note is a courtesy
	}
	for _, s := range sts {
		switch {
		case !s.Registered:
			fmt.Fprintf(w, "%s: not %s: registered by another binary (such as the service that owns it); run this command with that binary\n", s.Name, done)
		case !s.Installed:
			fmt.Fprintf(w, "%s: not %s: not installed in this database (run '%s migrate up' to install it)\n", s.Name, done, e.name)
		}
	}
}

// checkNamesOffline refuses, before anything opens the database, names
// this binary does not register when there is no database that could
// record them (a sqlite:PATH whose file does not exist). Otherwise the
// database decides: a name may be another binary's projection.
func checkNamesOffline(g *globals, names []string) error {
	path, ok := eventlog.SQLiteFile(g.resolveDatabaseURL())
	if !ok {
		return nil
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	known := projectionNames(g.cfg)
	for _, n := range names {
		if !slices.Contains(known, n) {
			return usagef("unknown projection %q: known projections are %s", n, strings.Join(known, ", "))
		}
	}
	return nil
}

// projectionArgs is the argument check of rebuild and verify
// (checkNamesOffline).
func projectionArgs(g *globals) cobra.PositionalArgs {
	return func(_ *cobra.Command, names []string) error { return checkNamesOffline(g, names) }
}

// projectionNames returns the names of cfg's projections in name order.
func projectionNames(cfg *Config) []string {
	names := make([]string, 0, len(cfg.Projections))
	for _, p := range cfg.Projections {
		names = append(names, p.Name())
	}
	slices.Sort(names)
	return names
}

// rebuildReport is one projection's rebuild, as printed.
type rebuildReport struct {
	Name         string  `json:"name"`
	Version      int     `json:"version"`
	Events       int64   `json:"events"`
	Rows         int64   `json:"rows"`
	Seq          int64   `json:"seq"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_second"`
	// Online is false for a rebuild offline: asked for (--offline), or
	// because the projection cannot be rebuilt online, as OfflineReason
	// says.
	Online        bool   `json:"online"`
	OfflineReason string `json:"offline_reason,omitempty"`
	// CatchUpRounds and CatchUpEvents count an online rebuild's catch-up,
	// SwapEvents the events it applied in the swap.
	CatchUpRounds int   `json:"catch_up_rounds"`
	CatchUpEvents int64 `json:"catch_up_events"`
	SwapEvents    int64 `json:"swap_events"`
	// LockHeldSeconds is how long appends of the projection's kinds could
	// wait for it: the swap online, the whole rebuild offline.
	LockHeldSeconds float64 `json:"lock_held_seconds"`
}

func runRebuild(ctx context.Context, g *globals, o rebuildOptions) error {
	e, err := g.open(ctx, requireSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	reports, err := rebuild(ctx, e, g.stderr, o)
	if err != nil {
		return err
	}
	if len(o.names) == 0 {
		noteUnregistered(ctx, e, g.stderr, "rebuilt")
	}
	if o.output == outputJSON {
		return writeJSON(g.stdout, reports)
	}
	if len(reports) == 0 {
		fmt.Fprintln(g.stdout, "nothing to rebuild: no projection is stale")
	}
	for _, r := range reports {
		printRebuild(g.stdout, r)
	}
	return nil
}

// rebuild runs projection.Rebuild with progress on stderr.
func rebuild(ctx context.Context, e *env, stderr io.Writer, o rebuildOptions) ([]rebuildReport, error) {
	pr := newProgressReporter(stderr, o.progress)
	res, err := e.m.Rebuild(ctx, &projection.RebuildOptions{
		Names: o.names, StaleOnly: o.stale, BatchSize: o.batchSize, Offline: o.offline, Gentle: o.gentle, Progress: pr.update,
	})
	pr.finish()
	if err := namesError(err); err != nil {
		return nil, err
	}
	reports := make([]rebuildReport, 0, len(res))
	for _, r := range res {
		rep := rebuildReport{Name: r.Name, Version: r.Version, Events: r.Events, Rows: r.Rows, Seq: r.Seq, Seconds: r.Duration.Seconds(),
			Online: r.Online, OfflineReason: r.OfflineReason, CatchUpRounds: r.CatchUpRounds, CatchUpEvents: r.CatchUpEvents,
			SwapEvents: r.SwapEvents, LockHeldSeconds: r.LockHeld.Seconds()}
		if r.Duration > 0 {
			rep.EventsPerSec = float64(r.Events) / r.Duration.Seconds()
		}
		reports = append(reports, rep)
	}
	if err != nil {
		if ctx.Err() != nil {
			return reports, fmt.Errorf("rebuild interrupted: the projection being rebuilt keeps its previous state")
		}
		return reports, fmt.Errorf("%w; the projection keeps its previous state", err)
	}
	return reports, nil
}

func printRebuild(w io.Writer, r rebuildReport) {
	rows := plural(r.Rows, "row", "rows")
	if r.Rows < 0 {
		rows = "rows not counted"
	}
	mode := "online"
	if !r.Online {
		mode = "offline"
	}
	fmt.Fprintf(w, "rebuilt %s (version %d) %s: %s replayed, %s, up to seq %d, in %s (%s events/s)",
		r.Name, r.Version, mode, plural(r.Events, "event", "events"), rows, r.Seq, seconds(r.Seconds).Round(time.Millisecond), formatRate(r.EventsPerSec))
	if r.Online {
		fmt.Fprintf(w, "; catch-up %s, %s; swap %s", plural(r.CatchUpRounds, "round", "rounds"),
			plural(r.CatchUpEvents, "event", "events"), plural(r.SwapEvents, "event", "events"))
	}
	fmt.Fprintf(w, "; lock held %s", lockTime(seconds(r.LockHeldSeconds)))
	if r.OfflineReason != "" {
		fmt.Fprintf(w, "; not online because %s", r.OfflineReason)
	}
	fmt.Fprintln(w)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// lockTime rounds how long a lock was held to three significant digits
// or so: a swap holds it for milliseconds or less.
func lockTime(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
