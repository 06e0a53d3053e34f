package main

import (
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Environment variables of fleetd's authentication (AuthConfig).
const (
	EnvTokensFile  = "FLEETD_TOKENS_FILE"
	EnvTLSCert     = "FLEETD_TLS_CERT"
	EnvTLSKey      = "FLEETD_TLS_KEY"
	EnvTLSClientCA = "FLEETD_TLS_CLIENT_CA"
)

// newTokenCommand is `fleetd token`: issue, revoke and list the bearer
// tokens of a tokens file. A running fleetd reads the file again within
// a second of a change.
func newTokenCommand(lookup func(string) (string, bool)) *cobra.Command {
	path, _ := lookup(EnvTokensFile)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue, revoke and list the bearer tokens of agents and operators",
		Long: `token edits fleetd's tokens file (--tokens-file, or ` + EnvTokensFile + `),
which holds a line per token: its id, role, name, when it was issued and
the SHA-256 of the token. The token itself is printed once, by issue,
and stored nowhere. fleetd serve --tokens-file reads the file again
within a second of a change: a revoked token stops working without a
restart.

An agent's token names its host: it may post that host's events only.
An operator's token reads the rollouts, posts gate decisions and reads
/metrics. See docs/deploying-fleetd.md.`,
		Example: `  fleetd token issue --tokens-file /etc/fleetd/tokens --agent web-5
  fleetd token issue --tokens-file /etc/fleetd/tokens --operator gate
  fleetd token list --tokens-file /etc/fleetd/tokens
  fleetd token revoke --tokens-file /etc/fleetd/tokens 4f3a9c1e`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&path, "tokens-file", path, "the tokens file (env "+EnvTokensFile+")")
	needPath := func() error {
		if path == "" {
			return fmt.Errorf("--tokens-file (or %s) is required: the file fleetd serve --tokens-file reads", EnvTokensFile)
		}
		return nil
	}

	var agent, operator string
	issue := &cobra.Command{
		Use:   "issue (--agent HOST | --operator NAME)",
		Short: "Issue a token and print it (the file keeps only its hash)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := needPath(); err != nil {
				return err
			}
			role, name := roleAgent, agent
			switch {
			case (agent == "") == (operator == ""):
				return errors.New("give one of --agent HOST (an agent's token, for that host's events) or --operator NAME")
			case operator != "":
				role, name = roleOperator, operator
			}
			entries, err := readTokensFile(path)
			if err != nil {
				return err
			}
			token, e, err := newToken(role, name, time.Now())
			if err != nil {
				return err
			}
			if err := writeTokensFile(path, append(entries, e)); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			fmt.Fprintf(cmd.ErrOrStderr(), "fleetd: issued token %s to %s %s in %s; it is shown only this once\n", e.ID, role, name, path)
			return nil
		},
	}
	issue.Flags().StringVar(&agent, "agent", "", "the agent's host_id: the token may post that host's events only")
	issue.Flags().StringVar(&operator, "operator", "", "an operator's name: the token reads rollouts, posts gate decisions and reads /metrics")

	revoke := &cobra.Command{
		Use:   "revoke ID|NAME...",
		Short: "Revoke tokens: by id, or every token of an agent's host or an operator's name",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needPath(); err != nil {
				return err
			}
			entries, err := readTokensFile(path)
			if err != nil {
				return err
			}
			matched := make([]bool, len(args))
			kept := slices.DeleteFunc(slices.Clone(entries), func(e tokenEntry) bool {
				hit := false
				for i, a := range args {
					if a == e.ID || a == e.Name {
						matched[i], hit = true, true
					}
				}
				return hit
			})
			for i, a := range args {
				if !matched[i] {
					// Nothing is written: a typo must not pass for a revocation.
					return fmt.Errorf("%q is no token id or name in %s: see fleetd token list", a, path)
				}
			}
			if err := writeTokensFile(path, kept); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "fleetd: revoked %d token(s) in %s\n", len(entries)-len(kept), path)
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the tokens: id, role, name, issued (never the tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := needPath(); err != nil {
				return err
			}
			entries, err := readTokensFile(path)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tNAME\tISSUED")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.ID, e.Role, e.Name, e.Issued.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(issue, revoke, list)
	return cmd
}
