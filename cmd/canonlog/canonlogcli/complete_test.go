package canonlogcli

import (
	"context"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

// fakeProjection is a projection with only a name: enough for what the
// command tree does before it opens a database.
type fakeProjection string

func (p fakeProjection) Name() string                                        { return string(p) }
func (fakeProjection) Version() int                                          { return 1 }
func (fakeProjection) Apply(context.Context, *sqlx.Tx, eventlog.Event) error { return nil }
func (fakeProjection) Reset(context.Context, *sqlx.Tx) error                 { return nil }

var _ projection.Projection = fakeProjection("")

// complete asks the tree for the completions of args, as the shell
// scripts do, and returns them with the directive line.
func complete(t *testing.T, cfg *Config, args ...string) []string {
	t.Helper()
	r := runWith(t, cfg, append([]string{"__complete"}, args...)...)
	require.Equal(t, 0, r.code, r.err)
	return strings.Split(strings.TrimSuffix(r.out, "\n"), "\n")
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	const noFiles = ":4" // cobra.ShellCompDirectiveNoFileComp
	kinds := []string{"agent_event", "plan_action", "effect", "gate_decision", "verify_outcome", "manifest_poll", "rollout_event"}
	fleet := &Config{Name: "fleetd", Projections: []projection.Projection{fakeProjection("rollout_progress"), fakeProjection("probe_failures")}}
	for _, tc := range []struct {
		name string
		cfg  *Config
		args []string
		want []string
	}{
		{"rebuild names", nil, []string{"rebuild", ""}, []string{"probe_failures", noFiles}},
		{"verify names", nil, []string{"verify", ""}, []string{"probe_failures", noFiles}},
		{"names of the binary's projections, sorted", fleet, []string{"rebuild", ""}, []string{"probe_failures", "rollout_progress", noFiles}},
		{"a name given is not offered again", fleet, []string{"verify", "probe_failures", ""}, []string{"rollout_progress", noFiles}},
		{"after --all too", fleet, []string{"rebuild", "--stale", "rollout_progress", ""}, []string{"probe_failures", noFiles}},
		{"query --kind", nil, []string{"query", "--kind", ""}, append(kinds, noFiles)},
		{"tail --kind prefix", nil, []string{"tail", "--kind", "ma"}, []string{"manifest_poll", noFiles}},
		{"query --kind list", nil, []string{"query", "--kind", "agent_event,e"}, []string{"agent_event,effect", noFiles}},
		{"query --kind list skips the listed", nil, []string{"query", "--kind", "effect,"},
			[]string{"effect,agent_event", "effect,plan_action", "effect,gate_decision", "effect,verify_outcome", "effect,manifest_poll", "effect,rollout_event", noFiles}},
		{"append --kind", nil, []string{"append", "--kind", "g"}, []string{"gate_decision", noFiles}},
		{"query -o", nil, []string{"query", "-o", ""}, []string{"table", "json", "ndjson", noFiles}},
		{"tail --output", nil, []string{"tail", "--output", ""}, []string{"table", "ndjson", noFiles}},
		{"verify -o", nil, []string{"verify", "-o", ""}, []string{"table", "json", noFiles}},
		{"status -o", nil, []string{"status", "-o", "j"}, []string{"json", noFiles}},
		{"migrate up -o", nil, []string{"migrate", "up", "-o", ""}, []string{"table", "json", noFiles}},
		{"rebuild --progress", nil, []string{"rebuild", "--progress", ""}, []string{"auto", "bar", "lines", "none", noFiles}},
		{"demo --progress", nil, []string{"demo", "--progress", "l"}, []string{"lines", noFiles}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, complete(t, tc.cfg, tc.args...))
		})
	}

	t.Run("commands", func(t *testing.T) {
		t.Parallel()
		got := complete(t, nil, "")
		for _, want := range []string{"completion\t", "rebuild\t", "verify\t", "version\t"} {
			require.True(t, strings.Contains(strings.Join(got, "\n"), "\n"+want) || strings.HasPrefix(got[0], want), "%q in %q", want, got)
		}
	})

	t.Run("scripts", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ shell, want string }{
			{"bash", "__start_fleetd"},
			{"zsh", "#compdef fleetd"},
			{"fish", "complete -c fleetd"},
			{"powershell", "Register-ArgumentCompleter"},
		} {
			r := runWith(t, fleet, "completion", tc.shell)
			require.Equal(t, 0, r.code, r.err)
			require.Contains(t, r.out, tc.want, tc.shell)
		}
		r := runWith(t, nil, "completion", "tcsh")
		require.Equal(t, exitUsage, r.code)
		require.Contains(t, r.err, "Run 'canonlog completion --help' for usage.")
	})
}
