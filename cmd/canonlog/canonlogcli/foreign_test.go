package canonlogcli

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// deploySteps is an application's projection: one row per deploy_step
// event, which the stock command does not know.
type deploySteps struct{}

var deployStepsSQL = fstest.MapFS{"00001_deploy_steps.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE deploy_steps (event_log_seq BIGINT PRIMARY KEY REFERENCES event_log (seq), host_id TEXT);
-- +goose Down
DROP TABLE deploy_steps;
`)}}

func (deploySteps) Name() string           { return "deploy_steps" }
func (deploySteps) Version() int           { return 1 }
func (deploySteps) Kinds() []eventlog.Kind { return []eventlog.Kind{"deploy_step"} }
func (deploySteps) Tables() []string       { return []string{"deploy_steps"} }
func (deploySteps) Migrations() migrations.Set {
	return migrations.Set{Postgres: deployStepsSQL, SQLite: deployStepsSQL}
}
func (deploySteps) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO deploy_steps (event_log_seq, host_id) VALUES (?, ?)`), ev.Seq, ev.HostID)
	return err
}
func (deploySteps) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM deploy_steps`)
	return err
}

// TestOtherBinarysProjection runs an application's operator binary
// ("deployctl", registering deploy_steps and probe_failures) and the stock
// command on one database.
func TestOtherBinarysProjection(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		app := &Config{Name: "deployctl", Projections: []projection.Projection{deploySteps{}, probefailures.New()}}
		runApp := func(args ...string) result {
			t.Helper()
			var out, errOut strings.Builder
			code := Run(context.Background(), app, append([]string{"--database-url", c.url}, args...), strings.NewReader(""), &out, &errOut)
			return result{out.String(), errOut.String(), code}
		}
		okApp := func(args ...string) string {
			t.Helper()
			r := runApp(args...)
			require.Equal(t, 0, r.code, "%v: %s", args, r.err)
			return r.out
		}
		count := func() int {
			var n int
			require.NoError(t, c.db().Get(&n, `SELECT COUNT(*) FROM event_log`))
			return n
		}
		step := []string{"append", "--kind", "deploy_step", "--host", "web-1", "--payload", `{}`}

		okApp("migrate", "up")
		okApp(step...)
		require.Contains(t, okApp("status"), "deploy_steps")

		// The stock command reads the database and lists deploy_steps as
		// another binary's.
		out := c.ok("", "status")
		require.Regexp(t, `deploy_steps\s+-\s+1\s+registered by another binary: not checked`, out)
		require.Contains(t, out, "'canonlog append' refuses the kinds they consume")
		require.Contains(t, c.ok("", "query"), "deploy_step")

		// It refuses to append what deploy_steps consumes, and writes
		// nothing; other kinds go through.
		before := count()
		r := c.run("", step...)
		require.Equal(t, exitFailure, r.code)
		require.Contains(t, r.err, "canonlog: append: append of kind deploy_step refused: projection deploy_steps is recorded in this database as consuming that kind, and this binary does not register it")
		require.Contains(t, r.err, "(--allow-drift)")
		require.Equal(t, before, count())
		c.ok("", "append", "--kind", "effect", "--payload", `{}`)

		// rebuild and verify of it are usage errors naming the way out;
		// --all and a bare verify say what they skipped.
		for _, cmd := range []string{"rebuild", "verify"} {
			r = c.run("", cmd, "deploy_steps")
			require.Equal(t, exitUsage, r.code, r.err)
			require.Contains(t, r.err, cmd+": projection deploy_steps is registered by another binary, not this one: run "+cmd+" with the binary that registers it")
		}
		r = c.run("", "rebuild", "--all", "--progress", "none")
		require.Equal(t, 0, r.code, r.err)
		require.Contains(t, r.err, "deploy_steps: not rebuilt: registered by another binary")
		r = c.run("", "verify")
		require.Equal(t, 0, r.code, r.err)
		require.Contains(t, r.err, "deploy_steps: not verified: registered by another binary")

		// --allow-drift appends and leaves deploy_steps stale until its own
		// binary rebuilds it.
		c.ok("", append(step, "--allow-drift")...)
		require.Equal(t, before+2, count())
		out = okApp("status")
		require.Regexp(t, `deploy_steps\s+1\s+1\s+yes \(seq \d+ appended without it\)`, out)
		require.Contains(t, out, "run 'deployctl rebuild --stale'")
		r = runApp("verify", "deploy_steps")
		require.Equal(t, exitDifferent, r.code, r.err)
		okApp("rebuild", "--stale", "--progress", "none")
		okApp("verify")
		require.NotContains(t, okApp("status"), "yes")
	})
}

// TestStockBinaryOnAServicesDatabase: the service never installed
// probe_failures. The stock command reads its database without installing
// anything, and refuses only the appends probe_failures would miss.
func TestStockBinaryOnAServicesDatabase(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		app := &Config{Name: "deployctl", Projections: []projection.Projection{deploySteps{}}}
		var out, errOut strings.Builder
		require.Equal(t, 0, Run(context.Background(), app, []string{"--database-url", c.url, "migrate", "up"}, strings.NewReader(""), &out, &errOut), errOut.String())

		status := c.ok("", "status")
		require.Regexp(t, `probe_failures\s+1\s+-\s+not installed`, status)
		require.Contains(t, status, "'canonlog migrate up' installs them")
		c.ok("", "query")
		c.ok("", "append", "--kind", "effect", "--payload", `{}`)
		r := c.run("", "append", "--kind", "agent_event", "--host", "h1", "--payload", `{}`)
		require.Equal(t, exitFailure, r.code)
		require.Contains(t, r.err, "projection probe_failures is registered but not installed in this database")
		require.Contains(t, r.err, "run 'migrate up' first")
		r = c.run("", "rebuild", "probe_failures")
		require.Equal(t, exitUsage, r.code, r.err)
		require.Contains(t, r.err, "not installed")
		var n int
		require.NoError(t, c.db().Get(&n, `SELECT COUNT(*) FROM event_log`))
		require.Equal(t, 1, n)
		var tables int
		require.NoError(t, c.db().Get(&tables, `SELECT COUNT(*) FROM canonlog_projections WHERE name = 'probe_failures'`))
		require.Zero(t, tables, "reading installed nothing")
	})
}
