package canonlogcli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

type verifyOptions struct {
	output string
}

func newVerifyCommand(g *globals) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify [NAME…]",
		Short: "Check that projections equal a fresh derivation from the log",
		Long: `verify derives each projection (all of them when none is named) afresh,
inside a transaction it always rolls back, and compares it with the live
view row by row and by checksum. Nothing is changed.

Exit code 0 when every view is equal, 3 when one differs: the differing
rows are counted and up to ten are shown. 'canonlog rebuild NAME' repairs
a view that differs.`,
		Example: `  canonlog verify
  canonlog verify probe_failures -o json`,
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

type verifyReport struct {
	Name          string   `json:"name"`
	Equal         bool     `json:"equal"`
	Events        int64    `json:"events"`
	Missing       int64    `json:"missing"`
	Extra         int64    `json:"extra"`
	Samples       []string `json:"samples"`
	LiveChecksum  string   `json:"live_checksum,omitempty"`
	FreshChecksum string   `json:"fresh_checksum,omitempty"`
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
		reports[i] = verifyReport{Name: r.Name, Equal: r.Equal, Events: r.Events, Missing: r.Missing, Extra: r.Extra,
			Samples: []string{}, LiveChecksum: r.LiveChecksum, FreshChecksum: r.FreshChecksum}
		for _, s := range r.Samples {
			reports[i].Samples = append(reports[i].Samples, s.String())
		}
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
		return exitCodeError{exitDifferent, fmt.Errorf("verify: %s differs from a fresh derivation of the log: run 'canonlog rebuild %s' to repair it",
			strings.Join(differ, ", "), strings.Join(differ, " "))}
	}
	return nil
}

func printVerify(w io.Writer, reports []verifyReport) {
	for _, r := range reports {
		if r.Equal {
			fmt.Fprintf(w, "%s: equal to a fresh derivation (%d events replayed)\n", r.Name, r.Events)
			continue
		}
		fmt.Fprintf(w, "%s: DIFFERS from a fresh derivation (%d events replayed): %d rows missing from the live view, %d extra\n",
			r.Name, r.Events, r.Missing, r.Extra)
		if r.LiveChecksum != r.FreshChecksum {
			fmt.Fprintf(w, "  checksum live %s, fresh %s\n", r.LiveChecksum, r.FreshChecksum)
		}
		for _, s := range r.Samples {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
}
