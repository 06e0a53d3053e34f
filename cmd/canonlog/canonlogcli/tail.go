package canonlogcli

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
)

type tailOptions struct {
	filterFlags
	after        int64
	lines        int
	follow       bool
	pollInterval time.Duration
	output       string
}

func newTailCommand(g *globals) *cobra.Command {
	var o tailOptions
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print the latest events, and with -f follow new ones",
		Long: g.named(`tail prints the last events of the log (the last 10 matching ones, or
the events after --after SEQ) and, with -f, keeps printing new ones as
they commit until interrupted (Ctrl-C: exit code 130, as for any
interrupted command).

-f reads the log the way a consumer must to miss nothing: on PostgreSQL a
seq is assigned before its transaction commits, so following "seq > last"
would skip an event whose transaction commits after a later one. tail -f
follows in commit order instead (eventlog.Follower): each event prints
exactly once, once every transaction that started before it has ended,
possibly after an event with a higher seq. The first events (-n, --after)
come from one snapshot read and print at once; -f then prints exactly the
events that commit after that snapshot, whatever their seqs: an append
already running when tail starts prints in full when it commits.`),
		Example: g.named(`  {name} tail -f
  {name} tail -n 50 --rollout r-42 --kind gate_decision
  {name} tail --after 1200 -f -o ndjson`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.filter()
			if err != nil {
				return err
			}
			switch {
			case cmd.Flags().Changed("after") && cmd.Flags().Changed("lines"):
				return usagef("--after and --lines do not mix: start after a seq, or from the last N events")
			case o.pollInterval <= 0:
				return usagef("--poll-interval is %s, must be positive", o.pollInterval)
			}
			if err := checkOutput(o.output, outputTable, outputNDJSON); err != nil {
				return err
			}
			if !cmd.Flags().Changed("after") {
				o.after = -1
			}
			return runTail(cmd.Context(), g, f, o)
		},
	}
	o.add(cmd)
	fl := cmd.Flags()
	numFlag(fl, &o.after, "after", "", 0, bounds{}, "print the events with seq greater than this, instead of the last --lines events")
	numFlag(fl, &o.lines, "lines", "n", 10, bounds{}, "print the last N matching events first")
	fl.BoolVarP(&o.follow, "follow", "f", false, "keep printing new events until interrupted")
	fl.DurationVar(&o.pollInterval, "poll-interval", eventlog.DefaultPollInterval, "how often -f looks for new events (more than 0)")
	addOutputFlag(cmd, &o.output, outputTable, outputNDJSON)
	return cmd
}

func runTail(ctx context.Context, g *globals, f eventlog.Filter, o tailOptions) error {
	e, err := g.open(ctx, requireSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	ew := newEventWriter(g.stdout, o.output)
	pos, err := printCommitted(ctx, e, f, o, ew)
	if err != nil || !o.follow {
		return err
	}
	fol, err := e.log.NewFollower(pos, &eventlog.FollowOptions{Filter: f, PollInterval: o.pollInterval})
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	for ev, err := range fol.Events(ctx) {
		if err != nil {
			return fmt.Errorf("tail: %w", err)
		}
		if err := ew.write(ev); err != nil {
			return err
		}
	}
	// Events ends without an error only when ctx is done: an interrupt,
	// which is how -f is meant to stop (exit 130, like any interrupted
	// command).
	return fmt.Errorf("tail: %w", errInterrupted)
}

// printCommitted prints the first events — the last o.lines matching ones,
// or those after o.after — and, with -f, returns the position the follower
// starts from. Both come from one read snapshot: the follower then prints
// exactly the events that commit after it, however low their seqs (an
// append running now may hold seqs below the head), so nothing is printed
// twice or skipped. Unlike the follower, the snapshot read waits for no
// transaction running elsewhere on the server: the first events print at
// once.
func printCommitted(ctx context.Context, e *env, f eventlog.Filter, o tailOptions, ew *eventWriter) (eventlog.Position, error) {
	// Read-only, the transaction takes no write lock on SQLite and no
	// transaction id on PostgreSQL, so it holds no follower back.
	tx, err := e.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return eventlog.Position{}, fmt.Errorf("tail: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // it only read
	var pos eventlog.Position
	if o.follow {
		if pos, err = e.log.PositionAtHeadTx(ctx, tx); err != nil {
			return pos, fmt.Errorf("tail: %w", err)
		}
	}
	after := o.after
	if after < 0 {
		if o.lines == 0 {
			return pos, nil
		}
		if after, err = e.log.TailStartTx(ctx, tx, f, o.lines); err != nil {
			return pos, fmt.Errorf("tail: %w", err)
		}
	}
	q := f
	q.AfterSeq = after
	for {
		q.Limit = eventlog.MaxQueryLimit
		page, err := e.log.QueryTx(ctx, tx, q)
		if err != nil {
			return pos, fmt.Errorf("tail: %w", err)
		}
		for _, ev := range page {
			if err := ew.write(ev); err != nil {
				return pos, err
			}
		}
		if len(page) < q.Limit {
			return pos, nil
		}
		q.AfterSeq = page[len(page)-1].Seq
	}
}
