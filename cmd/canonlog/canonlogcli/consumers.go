package canonlogcli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
)

func newConsumersCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consumers",
		Short: "Show consumers' positions and lag, reset one, list, retry or skip its parked events",
		Long: g.named(`consumers operates the consumers (package consumer) that follow this
database's log: the services run them; these commands read and move their
positions. See docs/consumers.md.`),
	}
	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "List every consumer with its position, lag and failure",
		Long: `status lists every consumer with a position: the seq of the last event it
handled, its lag (events of its kinds above that seq, and the age of the
oldest of them), the events it parked, the event it stopped on when its
handler kept failing, and how many times an instance took it over.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			return runConsumersStatus(cmd.Context(), g, output)
		},
	}
	addOutputFlag(status, &output, outputTable, outputJSON)

	var (
		name  string
		toSeq int64
	)
	reset := &cobra.Command{
		Use:   "reset --name NAME --to-seq SEQ",
		Short: "Move a consumer's position to just after a seq",
		Long: g.named(`reset moves a consumer's position to just after --to-seq (0: the beginning
of the log): its next run handles the events committed after that seq, in
the log's order, and those at or below it that were still being appended.
An instance running it is deposed at its next save and stops; the failure
it recorded, if any, is cleared. Run '{name} consumers status' to see
where it was.`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usagef("give the consumer to reset with --name")
			}
			return runConsumersReset(cmd.Context(), g, name, toSeq)
		},
	}
	reset.Flags().StringVar(&name, "name", "", "the consumer")
	numFlag(reset.Flags(), &toSeq, "to-seq", "", 0, bounds{min: 0}, "the seq after which the consumer resumes")

	cmd.AddCommand(status, reset, newParkedCommand(g))
	return cmd
}

// newParkedCommand is "consumers parked": list (also without a
// subcommand), retry and skip.
func newParkedCommand(g *globals) *cobra.Command {
	listCmd := func(use string) *cobra.Command {
		var name, output string
		c := &cobra.Command{
			Use:   use,
			Short: "List the events a consumer parked",
			Long: `parked [list] lists the events a consumer parked (its failure policy
FailPark): each event's seq, the attempts its handler made, the last error,
and whether a retry was asked for and is still to come.`,
			Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if name == "" {
					return usagef("give the consumer with --name")
				}
				if err := checkOutput(output, outputTable, outputJSON); err != nil {
					return err
				}
				return runConsumersParked(cmd.Context(), g, name, output)
			},
		}
		c.Flags().StringVar(&name, "name", "", "the consumer")
		addOutputFlag(c, &output, outputTable, outputJSON)
		return c
	}
	parked := listCmd("parked --name NAME | parked (list | retry | skip) …")
	parked.Short = "List, retry or skip the events a consumer parked"
	change := func(what, short, long string, apply func(context.Context, *eventlog.Log, string, ...int64) (int, error)) *cobra.Command {
		var (
			name string
			seqs []int64
			all  bool
		)
		c := &cobra.Command{
			Use:   what + " --name NAME (--seq SEQ… | --all)",
			Short: short,
			Long:  g.named(long),
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				switch {
				case name == "":
					return usagef("give the consumer with --name")
				case all == (len(seqs) > 0):
					return usagef("give the events with --seq (repeated, or comma-separated), or --all")
				}
				for _, seq := range seqs {
					if seq <= 0 {
						return usagef("--seq %d: a seq is 1 or more", seq)
					}
				}
				return runConsumersParkedChange(cmd.Context(), g, what, name, seqs, apply)
			},
		}
		c.Flags().StringVar(&name, "name", "", "the consumer")
		c.Flags().Int64SliceVar(&seqs, "seq", nil, "a parked event's seq (repeat the flag, or separate seqs with commas)")
		c.Flags().BoolVar(&all, "all", false, "every event the consumer parked")
		return c
	}
	parked.AddCommand(listCmd("list --name NAME"),
		change("retry", "Have the running consumer try parked events again",
			`retry asks the consumer's running instance to try the parked events again,
once each, in seq order, when it next has nothing else to handle (within
its poll interval): an event its handler then succeeds on is no longer
parked; one it fails on stays parked with one attempt more and its new
error. '{name} consumers parked list' shows which are still to be tried.
The seqs must all be parked, or nothing is asked.`, consumer.RetryParked),
		change("skip", "Give up on parked events: never handle them",
			`skip removes parked events: the consumer never handles them. The seqs must
all be parked, or nothing is removed.`, consumer.SkipParked))
	return parked
}

func runConsumersParkedChange(ctx context.Context, g *globals, what, name string, seqs []int64,
	apply func(context.Context, *eventlog.Log, string, ...int64) (int, error)) error {
	e, err := g.open(ctx, readSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	n, err := apply(ctx, e.log, name, seqs...)
	if err != nil {
		if errors.Is(err, consumer.ErrNotParked) {
			return fmt.Errorf("consumers parked %s: %w", what, err)
		}
		return e.consumersError(err)
	}
	switch what {
	case "retry":
		fmt.Fprintf(g.stdout, "consumer %s tries %s again when it next has nothing else to handle\n", name, plural(n, "parked event", "parked events"))
	default:
		fmt.Fprintf(g.stdout, "consumer %s skips %s\n", name, plural(n, "parked event", "parked events"))
	}
	return nil
}

type consumerReport struct {
	Name string `json:"name"`
	// Position is where it resumes (eventlog.Position).
	Position   eventlog.Position `json:"position"`
	HandledSeq int64             `json:"handled_seq"`
	LagEvents  int64             `json:"lag_events"`
	LagSeconds float64           `json:"lag_seconds"`
	Parked     int               `json:"parked"`
	// Stopped: it stopped on event FailedSeq, which its handler kept
	// failing on (consumer.FailStop), and handles nothing until it
	// handles that one or is reset.
	Stopped    bool      `json:"stopped"`
	FailedSeq  int64     `json:"failed_seq"` // 0 when it did not stop on a failure
	Failure    string    `json:"failure"`
	Generation int64     `json:"generation"`
	Kinds      []string  `json:"kinds"` // ["*"] for every kind
	Version    int       `json:"version"`
	UpdatedAt  time.Time `json:"updated_at"`
	// ChangedAt and ChangedFrom: the last takeover with other kinds or
	// another handler version, and what it ran with before.
	ChangedAt   *time.Time `json:"changed_at"`
	ChangedFrom string     `json:"changed_from,omitempty"`
}

// newConsumerReports reports the consumers ReadStatus returned.
func newConsumerReports(sts []consumer.Status) []consumerReport {
	reports := make([]consumerReport, len(sts))
	for i, s := range sts {
		kinds := []string{"*"}
		if len(s.Kinds) > 0 {
			kinds = kinds[:0]
			for _, k := range s.Kinds {
				kinds = append(kinds, string(k))
			}
		}
		reports[i] = consumerReport{Name: s.Name, Position: s.Position, HandledSeq: s.HandledSeq, LagEvents: s.LagEvents, LagSeconds: s.LagSeconds,
			Parked: s.Parked, Stopped: s.FailedSeq > 0, FailedSeq: s.FailedSeq, Failure: s.Failure, Generation: s.Generation, Kinds: kinds,
			Version: s.Version, UpdatedAt: s.UpdatedAt.UTC(), ChangedFrom: s.ChangedFrom}
		if !s.ChangedAt.IsZero() {
			at := s.ChangedAt.UTC()
			reports[i].ChangedAt = &at
		}
	}
	return reports
}

// consumersError says how to get the consumers' tables when err shows
// they are missing (a database migrated by an older canonlog).
func (e *env) consumersError(err error) error {
	if !strings.Contains(err.Error(), "canonlog_consumer") {
		return err
	}
	return fmt.Errorf("%w (a database migrated before consumers existed has no table for them: run '%s migrate up')", err, e.name)
}

func runConsumersStatus(ctx context.Context, g *globals, output string) error {
	e, err := g.open(ctx, readSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	sts, err := consumer.ReadStatus(ctx, e.log)
	if err != nil {
		return e.consumersError(err)
	}
	reports := newConsumerReports(sts)
	if output == outputJSON {
		return writeJSON(g.stdout, reports)
	}
	if len(reports) == 0 {
		fmt.Fprintln(g.stdout, "no consumers: none has run on this database")
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHANDLED_SEQ\tLAG_EVENTS\tLAG_SECONDS\tPARKED\tFAILED_SEQ\tTAKEOVERS\tUPDATED")
	for _, r := range reports {
		failed := "-"
		if r.FailedSeq > 0 {
			failed = fmt.Sprint(r.FailedSeq)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%d\t%s\t%d\t%s\n", r.Name, r.HandledSeq, r.LagEvents, r.LagSeconds, r.Parked, failed,
			r.Generation, r.UpdatedAt.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range reports {
		if r.FailedSeq > 0 {
			fmt.Fprintf(g.stdout, "%s stopped on event %d: %s\n", r.Name, r.FailedSeq, r.Failure)
		}
		if r.ChangedAt != nil {
			fmt.Fprintf(g.stdout, "%s changed at %s: it ran with %s before, and now with kinds=%s; version=%d (it resumed from its position: reset it if its handler needs the events before)\n",
				r.Name, r.ChangedAt.Format(time.RFC3339), r.ChangedFrom, strings.Join(r.Kinds, ","), r.Version)
		}
	}
	return nil
}

func runConsumersReset(ctx context.Context, g *globals, name string, seq int64) error {
	e, err := g.open(ctx, readSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	if err := consumer.Reset(ctx, e.log, name, seq); err != nil {
		if errors.Is(err, consumer.ErrUnknownConsumer) {
			return fmt.Errorf("consumers reset: no consumer %q has a position: '%s consumers status' lists them", name, e.name)
		}
		return e.consumersError(err)
	}
	fmt.Fprintf(g.stdout, "consumer %s resumes after seq %d\n", name, seq)
	return nil
}

type parkedReport struct {
	Seq      int64     `json:"seq"`
	Attempts int       `json:"attempts"`
	Failure  string    `json:"failure"`
	ParkedAt time.Time `json:"parked_at"`
	// RetryRequestedAt is set while a retry is to come.
	RetryRequestedAt *time.Time `json:"retry_requested_at"`
}

func runConsumersParked(ctx context.Context, g *globals, name, output string) error {
	e, err := g.open(ctx, readSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	ps, err := consumer.ListParked(ctx, e.log, name)
	if err != nil {
		return e.consumersError(err)
	}
	reports := make([]parkedReport, len(ps))
	for i, p := range ps {
		reports[i] = parkedReport{Seq: p.Seq, Attempts: p.Attempts, Failure: p.Failure, ParkedAt: p.ParkedAt.UTC()}
		if !p.RetryRequestedAt.IsZero() {
			at := p.RetryRequestedAt.UTC()
			reports[i].RetryRequestedAt = &at
		}
	}
	if output == outputJSON {
		return writeJSON(g.stdout, reports)
	}
	if len(reports) == 0 {
		fmt.Fprintf(g.stdout, "consumer %s has parked no event\n", name)
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tATTEMPTS\tPARKED\tRETRY\tFAILURE")
	for _, r := range reports {
		retry := "-"
		if r.RetryRequestedAt != nil {
			retry = "asked " + r.RetryRequestedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", r.Seq, r.Attempts, r.ParkedAt.Format(time.RFC3339), retry, r.Failure)
	}
	return tw.Flush()
}
