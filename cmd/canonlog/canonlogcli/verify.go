package canonlogcli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/projection"
)

type verifyOptions struct {
	output string
}

func newVerifyCommand(g *globals) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify [NAME…]",
		Short: "Check that projections equal a fresh derivation from the log",
		Long: g.named(`verify derives each projection (all of them when none is named) afresh,
inside a transaction it always rolls back, and compares it with the live
view row by row and by checksum. Nothing is changed.

Exit code 0 when every view is equal, 3 when one differs: the differing
rows are counted and up to ten are shown. '{name} rebuild NAME' repairs
a view that differs.`),
		Example: g.named(`  {name} verify
  {name} verify probe_failures -o json`),
		Args:              projectionArgs(g),
		ValidArgsFunction: completeProjections(g.cfg),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON); err != nil {
				return err
			}
			return runVerify(cmd.Context(), g, args, o.output)
		},
	}
	addOutputFlag(cmd, &o.output, outputTable, outputJSON)
	return cmd
}

// verifyReport is one projection's verification, as printed (-o json: one
// object per projection, in name order).
type verifyReport struct {
	Name    string `json:"name"`
	Equal   bool   `json:"equal"`
	Events  int64  `json:"events"`  // events replayed into the fresh derivation
	Missing int64  `json:"missing"` // rows the fresh derivation has and the live view lacks
	Extra   int64  `json:"extra"`   // rows the live view has and the fresh derivation lacks
	// The checksums, for projections that compute one.
	LiveChecksum  string `json:"live_checksum,omitempty"`
	FreshChecksum string `json:"fresh_checksum,omitempty"`
	// Samples are up to ten differing rows.
	Samples []verifySample `json:"samples"`
}

// verifySample is one differing row: its table, whether the live view
// misses it or has it extra, and its columns as the database renders them
// as text (null for NULL).
type verifySample struct {
	Table string             `json:"table"`
	Side  string             `json:"side"`
	Row   map[string]*string `json:"row"`
	line  string             // Sample.String(), for the table output
}

// newVerifyReport adapts projection's result to what verify prints.
func newVerifyReport(r projection.VerifyResult) verifyReport {
	rep := verifyReport{Name: r.Name, Equal: r.Equal, Events: r.Events, Missing: r.Missing, Extra: r.Extra,
		LiveChecksum: r.LiveChecksum, FreshChecksum: r.FreshChecksum, Samples: []verifySample{}}
	for _, smp := range r.Samples {
		row := make(map[string]*string, len(smp.Columns))
		for i, c := range smp.Columns {
			row[c] = smp.Values[i]
		}
		rep.Samples = append(rep.Samples, verifySample{Table: smp.Table, Side: smp.Side, Row: row, line: smp.String()})
	}
	return rep
}

func runVerify(ctx context.Context, g *globals, names []string, output string) error {
	e, err := g.open(ctx, requireSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	res, err := e.m.Verify(ctx, names)
	if ue := namesError(err); ue != nil {
		return ue
	}
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if len(names) == 0 {
		noteUnregistered(ctx, e, g.stderr, "verified")
	}
	reports := make([]verifyReport, len(res))
	var differ []string
	for i, r := range res {
		reports[i] = newVerifyReport(r)
		if !r.Equal {
			differ = append(differ, r.Name)
		}
	}
	if output == outputJSON {
		err = writeJSON(g.stdout, reports)
	} else {
		printVerify(g.stdout, reports)
	}
	if err != nil {
		return err
	}
	if len(differ) > 0 {
		verb := "differs"
		if len(differ) > 1 {
			verb = "differ"
		}
		return exitCodeError{exitDifferent, fmt.Errorf("verify: %s %s from a fresh derivation of the log: run '%s rebuild %s' to repair it",
			strings.Join(differ, ", "), verb, g.cfg.Name, strings.Join(differ, " "))}
	}
	return nil
}

func printVerify(w io.Writer, reports []verifyReport) {
	for _, r := range reports {
		if r.Equal {
			fmt.Fprintf(w, "%s: equal to a fresh derivation (%s replayed)\n", r.Name, plural(r.Events, "event", "events"))
			continue
		}
		fmt.Fprintf(w, "%s: DIFFERS from a fresh derivation (%s replayed): %s missing from the live view, %d extra\n",
			r.Name, plural(r.Events, "event", "events"), plural(r.Missing, "row", "rows"), r.Extra)
		if r.LiveChecksum != r.FreshChecksum {
			fmt.Fprintf(w, "  checksum live %s, fresh %s\n", r.LiveChecksum, r.FreshChecksum)
		}
		for _, s := range r.Samples {
			fmt.Fprintf(w, "  %s\n", s.line)
		}
	}
}
