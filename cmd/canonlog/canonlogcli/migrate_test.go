package canonlogcli

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

// hostsProjection stands for an application's own projection: a table of
// its own, installed by its own migration set, pointing into event_log.
type hostsProjection struct{}

func (hostsProjection) Name() string { return "fleet_hosts" }
func (hostsProjection) Version() int { return 1 }
func (hostsProjection) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	if ev.HostID == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO fleet_hosts (event_log_seq, host_id) VALUES (?, ?)`), ev.Seq, ev.HostID)
	return err
}
func (hostsProjection) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM fleet_hosts`)
	return err
}
func (hostsProjection) Tables() []string { return []string{"fleet_hosts"} }
func (hostsProjection) Migrations() migrations.Set {
	files := fstest.MapFS{"00001_fleet_hosts.sql": {Data: []byte(`-- +goose Up
CREATE TABLE fleet_hosts (event_log_seq BIGINT NOT NULL REFERENCES event_log (seq), host_id TEXT NOT NULL);

-- +goose Down
DROP TABLE fleet_hosts;
`)}}
	return migrations.Set{Postgres: files, SQLite: files}
}

// fleetd is the command tree as an application mounts it.
var fleetd = &Config{Name: "fleetd", Projections: []projection.Projection{probefailures.New(), hostsProjection{}}}

// runAs runs args against c's database with the command tree cfg.
func (c *cli) runAs(cfg *Config, args ...string) result {
	c.t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), cfg, append([]string{"--database-url", c.url}, args...), strings.NewReader(""), &out, &errOut)
	return result{out.String(), errOut.String(), code}
}

// schemaState is what a migrate command could change: the tables of the
// database (PostgreSQL: of the test's schema) and the rows of every
// version table.
func (c *cli) schemaState() map[string][]string {
	c.t.Helper()
	db := c.db()
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`
	if db.DriverName() == "postgres" {
		q = `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'S')`
	}
	var tables []string
	require.NoError(c.t, db.Select(&tables, q))
	slices.Sort(tables)
	state := map[string][]string{"": tables}
	for _, t := range tables {
		if t != migrations.CoreTable && !strings.HasPrefix(t, migrations.CoreTable+"_") || strings.HasSuffix(t, "_id_seq") {
			continue
		}
		var rows []string
		require.NoError(c.t, db.Select(&rows, `SELECT id || ' ' || version_id FROM `+t+` ORDER BY id`))
		state[t] = rows
	}
	return state
}

func requireOneLine(t *testing.T, stderr string) {
	t.Helper()
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
}

func TestMigrateStatus(t *testing.T) {
	t.Parallel()

	t.Run("MissingSQLiteFile", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path := filepath.Join(dir, "none.db")
		for _, tc := range []struct {
			args []string
			code int
		}{
			{[]string{"migrate", "status"}, 1},
			{[]string{"migrate", "status", "-o", "json"}, 1},
			{[]string{"migrate", "down", "--yes"}, 1},
			{[]string{"migrate", "down"}, 2}, // without --yes: a usage error, as ever
		} {
			args := tc.args
			r := runIn(t, "", append([]string{"--database-url", "sqlite:" + path}, args...)...)
			require.Equal(t, tc.code, r.code, "%v: %s", args, r.err)
			require.Contains(t, r.err, "no database at "+path)
			require.Contains(t, r.err, "nothing was created")
			require.Equal(t, 1, strings.Count(strings.TrimSuffix(r.err, "Run 'canonlog migrate down --help' for usage.\n"), "\n"), "one line: %q", r.err)
			_, err := os.Stat(path)
			require.ErrorIs(t, err, fs.ErrNotExist, "%v created the database", args)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, entries, "%v created files", args)
		}
		// The hint names the binary.
		var out, errOut bytes.Buffer
		Run(context.Background(), fleetd, []string{"--database-url", "sqlite:" + path, "migrate", "status"}, strings.NewReader(""), &out, &errOut)
		require.Contains(t, errOut.String(), "create it with 'fleetd migrate up'")
	})

	dbtest.Run(t, func(t *testing.T, backend string) {
		t.Run("CreatesNothing", func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, backend)
			c.db() // an empty database (on SQLite: an empty file)
			before := c.schemaState()
			require.Empty(t, before[""])
			for _, args := range [][]string{{"migrate", "status"}, {"migrate", "status", "-o", "json"}} {
				out := c.ok("", args...)
				require.Contains(t, out, "00001_event_log.sql")
				require.Equal(t, before, c.schemaState(), "%v", args)
			}
			out := c.ok("", "migrate", "status")
			require.Contains(t, out, "pending: run 'canonlog migrate up'")
			if backend == "sqlite" {
				_, err := os.Stat(strings.TrimPrefix(c.url, "sqlite:") + migrations.LockFileSuffix)
				require.ErrorIs(t, err, fs.ErrNotExist, "status takes no migration lock")
			}
		})

		t.Run("AfterUp", func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, backend).migrated()
			before := c.schemaState()
			out := c.ok("", "migrate", "status")
			require.Contains(t, out, "probe_failures  1")
			require.NotContains(t, out, "pending")
			require.Equal(t, before, c.schemaState())

			// A set this binary does not register is named.
			r := c.runAs(fleetd, "migrate", "up")
			require.Equal(t, 0, r.code, r.err)
			out = c.ok("", "migrate", "status")
			require.Contains(t, out, "other migration sets in this database, not registered by canonlog: fleet_hosts")
			out = c.runAs(fleetd, "migrate", "status").out
			require.Contains(t, out, "fleet_hosts     1")
			require.NotContains(t, out, "other migration sets")
		})
	})
}

func TestMigrateDown(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		t.Run("RefusesForeignSet", func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, backend).migrated()
			// A set the stock binary does not have, installed the way a
			// service's own migration run installs it.
			set := hostsProjection{}.Migrations()
			set.Name = "fleet_hosts"
			m, err := migrations.New(c.db(), set)
			require.NoError(t, err)
			_, err = m.Up(context.Background())
			require.NoError(t, err)
			c.ok("", "append", "--kind", "agent_event", "--host", "h1", "--payload", "{}")
			_, err = c.db().Exec(`INSERT INTO fleet_hosts (event_log_seq, host_id) VALUES (1, 'h1')`)
			require.NoError(t, err)
			before := c.schemaState()

			for _, args := range [][]string{{"migrate", "down", "--yes"}, {"migrate", "down"}} {
				r := c.run("", args...)
				require.Equal(t, 1, r.code, "%v: %s", args, r.err)
				requireOneLine(t, r.err)
				for _, want := range []string{
					"nothing was rolled back",
					"fleet_hosts (version tables canonlog_migrations_fleet_hosts)",
					"roll them back first with the program that registers them",
					"canonlog registers only probe_failures",
					"then run 'canonlog migrate down --yes' again",
				} {
					require.Contains(t, r.err, want, "%v", args)
				}
				require.NotContains(t, r.out, "rolled back", "%v", args)
				require.Equal(t, before, c.schemaState(), "%v changed the database", args)
			}
			events, rows := c.counts()
			require.Equal(t, 1, events)
			require.Zero(t, rows)
		})

		t.Run("ShowsPlanThenRollsBack", func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, backend)
			r := c.runAs(fleetd, "migrate", "up")
			require.Equal(t, 0, r.code, r.err)
			before := c.schemaState()

			r = c.runAs(fleetd, "migrate", "down")
			require.Equal(t, 2, r.code, r.err)
			require.Contains(t, r.err, "add --yes")
			lines := strings.Split(strings.TrimSpace(r.out), "\n")
			require.Contains(t, lines[0], "migrate down would roll back on ")
			var order []string
			for _, l := range lines[2:] {
				if f := strings.Fields(l); len(f) == 4 {
					order = append(order, f[0]+" "+f[2])
				}
			}
			// up applies the sets in name order (the registry's), down
			// the other way round, core last.
			require.Equal(t, []string{"probe_failures 00002_probe_failures_page_index.sql", "probe_failures 00001_probe_failures.sql", "fleet_hosts 00001_fleet_hosts.sql"}, order[:3])
			require.Equal(t, "core 00001_event_log.sql", order[len(order)-1])
			require.Contains(t, r.out, "drops: projection probe_failures (probe_failures); projection fleet_hosts (fleet_hosts); core (event_log with every event")
			require.Equal(t, before, c.schemaState(), "without --yes nothing changes")

			r = c.runAs(fleetd, "migrate", "down", "--yes")
			require.Equal(t, 0, r.code, r.err)
			require.Contains(t, r.out, "rolling back on ")
			require.Contains(t, r.out, fmt.Sprintf("%d migrations rolled back", len(order)))
			var rolled []string
			for _, l := range strings.Split(r.out, "\n") {
				if rest, ok := strings.CutPrefix(l, "rolled back "); ok {
					rolled = append(rolled, rest[:strings.Index(rest, " (")])
				}
			}
			require.Equal(t, order, rolled, "down does what the plan said")
			state := c.schemaState()
			for _, table := range state[""] {
				require.True(t, strings.HasPrefix(table, migrations.CoreTable), "left behind: %s", table)
			}

			r = c.runAs(fleetd, "migrate", "down")
			require.Equal(t, 0, r.code, r.err)
			require.Contains(t, r.out, "nothing to roll back")
		})

		t.Run("PartialFailure", func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, backend).migrated()
			c.ok("", "append", "--kind", "agent_event", "--payload", "{}")
			// A table outside any migration set pointing into event_log.
			_, err := c.db().Exec(`CREATE TABLE by_hand (event_log_seq BIGINT REFERENCES event_log (seq))`)
			require.NoError(t, err)
			_, err = c.db().Exec(`INSERT INTO by_hand (event_log_seq) VALUES (1)`)
			require.NoError(t, err)

			r := c.runAs(&Config{Name: "fleetd"}, "migrate", "down", "--yes")
			require.Equal(t, 1, r.code)
			requireOneLine(t, r.err)
			require.Contains(t, r.err, "down stopped at core 00001_event_log.sql")
			require.Contains(t, r.err, "still applied: core 00001_event_log.sql")
			require.Contains(t, r.err, "to continue: 'fleetd migrate down --yes', to restore: 'fleetd migrate up'")
			require.Contains(t, r.out, "rolled back probe_failures 00001_probe_failures.sql")

			_, err = c.db().Exec(`DROP TABLE by_hand`)
			require.NoError(t, err)
			out := c.ok("", "migrate", "down", "--yes")
			require.Contains(t, out, "rolled back core 00001_event_log.sql")
			require.Contains(t, out, "1 migration rolled back")
		})
	})
}
