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
)

func newConsumersCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consumers",
		Short: "Show consumers' positions and lag, reset one, list its parked events",
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

	var parkedName, parkedOutput string
	parked := &cobra.Command{
		Use:   "parked --name NAME",
		Short: "List the events a consumer parked",
		Long: `parked lists the events a consumer parked (its failure policy FailPark):
each event's seq, the attempts its handler made and the last error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if parkedName == "" {
				return usagef("give the consumer with --name")
			}
			if err := checkOutput(parkedOutput, outputTable, outputJSON); err != nil {
				return err
			}
			return runConsumersParked(cmd.Context(), g, parkedName, parkedOutput)
		},
	}
	parked.Flags().StringVar(&parkedName, "name", "", "the consumer")
	addOutputFlag(parked, &parkedOutput, outputTable, outputJSON)

	cmd.AddCommand(status, reset, parked)
	return cmd
}

type consumerReport struct {
	Name       string    `json:"name"`
	HandledSeq int64     `json:"handled_seq"`
	LagEvents  int64     `json:"lag_events"`
	LagSeconds float64   `json:"lag_seconds"`
	Parked     int       `json:"parked"`
	FailedSeq  int64     `json:"failed_seq"` // 0 when it did not stop on a failure
	Failure    string    `json:"failure"`
	Generation int64     `json:"generation"`
	Kinds      []string  `json:"kinds"` // ["*"] for every kind
	Version    int       `json:"version"`
	UpdatedAt  time.Time `json:"updated_at"`
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
	reports := make([]consumerReport, len(sts))
	for i, s := range sts {
		kinds := []string{"*"}
		if len(s.Kinds) > 0 {
			kinds = kinds[:0]
			for _, k := range s.Kinds {
				kinds = append(kinds, string(k))
			}
		}
		reports[i] = consumerReport{Name: s.Name, HandledSeq: s.HandledSeq, LagEvents: s.LagEvents, LagSeconds: s.LagSeconds,
			Parked: s.Parked, FailedSeq: s.FailedSeq, Failure: s.Failure, Generation: s.Generation, Kinds: kinds,
			Version: s.Version, UpdatedAt: s.UpdatedAt.UTC()}
	}
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
	}
	if output == outputJSON {
		return writeJSON(g.stdout, reports)
	}
	if len(reports) == 0 {
		fmt.Fprintf(g.stdout, "consumer %s has parked no event\n", name)
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tATTEMPTS\tPARKED\tFAILURE")
	for _, r := range reports {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", r.Seq, r.Attempts, r.ParkedAt.Format(time.RFC3339), r.Failure)
	}
	return tw.Flush()
}
