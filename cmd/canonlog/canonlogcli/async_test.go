package canonlogcli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// asyncDeploySteps is deploySteps maintained by a consumer after commit.
type asyncDeploySteps struct{ deploySteps }

func (asyncDeploySteps) Asynchronous() bool { return true }

// An application's asynchronous projection: its binary marks it async in
// status, rebuilds it (positioning its consumer) and verifies it; appends
// leave it alone, the stock binary's included, which owes it nothing.
func TestAsyncProjectionCommands(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		app := &Config{Name: "deployctl", Projections: []projection.Projection{asyncDeploySteps{}}}
		okApp := func(args ...string) string {
			t.Helper()
			var out, errOut strings.Builder
			code := Run(context.Background(), app, append([]string{"--database-url", c.url}, args...), strings.NewReader(""), &out, &errOut)
			require.Equal(t, 0, code, "%v: %s", args, errOut.String())
			return out.String()
		}
		step := []string{"append", "--kind", "deploy_step", "--host", "web-1", "--payload", `{}`}
		okApp("migrate", "up")
		okApp(step...)
		c.ok("", step...) // the stock binary: nothing to guard
		require.Zero(t, count(t, c, "deploy_steps"), "appends do not apply it")

		status := okApp("status")
		require.Regexp(t, `deploy_steps\s+1 \(async\)`, status)
		require.Contains(t, status, "async projections are maintained after commit by a consumer of the same name: 'deployctl consumers status'")
		var rep statusReport
		require.NoError(t, json.Unmarshal([]byte(okApp("status", "-o", "json")), &rep))
		require.True(t, rep.Projections[0].Async)

		// The rebuild derives the events up to the followers' horizon —
		// both, unless another transaction on the server (another test's)
		// holds it back — and positions the consumer there.
		okApp("rebuild", "deploy_steps")
		rows := count(t, c, "deploy_steps")
		require.LessOrEqual(t, rows, 2)
		if backend == "sqlite" {
			require.Equal(t, 2, rows, "one writer: the horizon is the head")
		}
		require.Regexp(t, fmt.Sprintf(`(?m)^deploy_steps +\d+ +%d `, 2-rows), okApp("consumers", "status"), "its consumer has the events the rebuild did not derive to handle")
		require.Contains(t, okApp("verify", "deploy_steps"), fmt.Sprintf("deploy_steps: equal to a fresh derivation (%s replayed)", plural(rows, "event", "events")))
	})
}

func count(t *testing.T, c *cli, table string) int {
	t.Helper()
	var n int
	require.NoError(t, c.db().Get(&n, `SELECT COUNT(*) FROM `+table))
	return n
}
