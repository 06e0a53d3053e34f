package canonlogcli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
)

// filterFlags are the event filters query and tail share.
type filterFlags struct {
	host, rollout string
	kinds         []string
	since, until  string
	changed       func(flag string) bool // the command's Flags().Changed
}

func (f *filterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.changed = fl.Changed
	fl.StringVar(&f.host, "host", "", "only events of this host id")
	fl.StringVar(&f.rollout, "rollout", "", "only events of this rollout id")
	fl.StringSliceVar(&f.kinds, "kind", nil, "only events of these kinds (repeat or comma-separate)")
	completeFlag(cmd, "kind", completeKindList)
	fl.StringVar(&f.since, "since", "", "only events with ts at or after this RFC 3339 time")
	fl.StringVar(&f.until, "until", "", "only events with ts before this RFC 3339 time")
}

// filter validates the flags into an eventlog.Filter (without cursor or
// limit).
func (f *filterFlags) filter() (eventlog.Filter, error) {
	out := eventlog.Filter{HostID: f.host, RolloutID: f.rollout}
	// --kind "" parses as no kinds at all: it would drop the filter the
	// caller asked for and print every kind.
	if len(f.kinds) == 0 && f.changed != nil && f.changed("kind") {
		return out, usagef("--kind is empty: name one or more kinds, or leave the flag out for all kinds")
	}
	for _, k := range f.kinds {
		kind := eventlog.Kind(k)
		if err := kind.Validate(); err != nil {
			return out, usagef("--kind: %v", err)
		}
		out.Kinds = append(out.Kinds, kind)
	}
	var err error
	if out.Since, err = parseTime("since", f.since); err != nil {
		return out, err
	}
	if out.Until, err = parseTime("until", f.until); err != nil {
		return out, err
	}
	if !out.Since.IsZero() && !out.Until.IsZero() && !out.Until.After(out.Since) {
		return out, usagef("--until (%s) must be after --since (%s)", f.until, f.since)
	}
	// The log's own checks, so that a value it would refuse (an id that
	// is not UTF-8, a year 0000) is a usage error naming its flag rather
	// than a refusal after connecting.
	var fe *eventlog.FilterError
	if err := out.Validate(); errors.As(err, &fe) {
		return out, usagef("--%s: %v", filterFieldFlags[fe.Field], fe.Err)
	} else if err != nil {
		return out, usagef("%v", err)
	}
	return out, nil
}

// filterFieldFlags names the flag of each field an *eventlog.FilterError
// names.
var filterFieldFlags = map[string]string{"HostID": "host", "RolloutID": "rollout", "Kinds": "kind", "Since": "since", "Until": "until"}

type queryOptions struct {
	filterFlags
	after  int64
	limit  int
	output string
}

func newQueryCommand(g *globals) *cobra.Command {
	var o queryOptions
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Print the events matching filters, in seq order",
		Long: g.named(`query prints the events matching the filters, in seq order. Page with
--after (the last seq printed). --output ndjson prints lines that
'{name} append --file' reads back: export a log with
'{name} query --limit 0 -o ndjson > log.ndjson'.`),
		Example: g.named(`  {name} query --rollout r-42 --kind agent_event --limit 20
  {name} query --host host-17 --since 2026-05-16T00:00:00Z -o json
  {name} query --limit 0 -o ndjson > export.ndjson`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.filter()
			if err != nil {
				return err
			}
			if err := checkOutput(o.output, outputTable, outputJSON, outputNDJSON); err != nil {
				return err
			}
			f.AfterSeq = o.after
			return runQuery(cmd.Context(), g, f, o.limit, o.output)
		},
	}
	o.add(cmd)
	numFlag(cmd.Flags(), &o.after, "after", "", 0, bounds{}, "only events with seq greater than this")
	numFlag(cmd.Flags(), &o.limit, "limit", "", eventlog.DefaultQueryLimit, bounds{min: 1, zero: "no limit, streamed in pages"}, "most events printed")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON, outputNDJSON)
	return cmd
}

func runQuery(ctx context.Context, g *globals, f eventlog.Filter, limit int, output string) error {
	e, err := g.open(ctx, requireSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	ew := newEventWriter(g.stdout, output)
	remaining := limit
	for limit == 0 || remaining > 0 {
		f.Limit = eventlog.MaxQueryLimit
		if limit > 0 {
			f.Limit = min(remaining, eventlog.MaxQueryLimit)
		}
		page, err := e.log.Query(ctx, f)
		if err != nil {
			return fmt.Errorf("query: %w", err)
		}
		for _, ev := range page {
			if err := ew.write(ev); err != nil {
				return err
			}
		}
		remaining -= len(page)
		if len(page) < f.Limit {
			break
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
	if ew.n == 0 && output == outputTable {
		fmt.Fprintln(g.stderr, "no events match")
	}
	return ew.close()
}
