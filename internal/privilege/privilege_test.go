// Package privilege_test proves the least-privilege PostgreSQL setup in
// roles.sql and grants.sql: the service role can do all a service does and
// cannot change history, even with the append-only trigger gone.
package privilege_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// script returns the SQL file with psql's :"name" variables replaced by
// the quoted identifiers, as psql -v name=value would.
func script(t *testing.T, file string, vars map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	s := string(b)
	for name, value := range vars {
		s = strings.ReplaceAll(s, `:"`+name+`"`, pq.QuoteIdentifier(value))
	}
	require.NotContains(t, s, `:"`, "%s has a variable the test does not set", file)
	return s
}

// roleURL returns the test server's URL as role, with search_path=schema.
func roleURL(t *testing.T, role, schema string) string {
	t.Helper()
	u, err := dbtest.URL(role, schema)
	require.NoError(t, err)
	return u
}

// as opens a pool on the test server as role, with search_path=schema.
func as(t *testing.T, role, schema string) *sqlx.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := eventlog.OpenDB(ctx, roleURL(t, role, schema))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// requireDenied checks that err is PostgreSQL's insufficient_privilege.
func requireDenied(t *testing.T, err error, what string) {
	t.Helper()
	var pqErr *pq.Error
	require.True(t, errors.As(err, &pqErr), "%s: want insufficient_privilege, got %v", what, err)
	require.Equal(t, "42501", string(pqErr.Code), "%s: %v", what, err)
}

func probeEntry(host, id string) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host, RolloutID: "r1", EventID: id,
		Payload: json.RawMessage(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","observed_at":"2026-05-16T01:00:00Z",` +
			`"sub_results":[{"control_id":"CIS-5.2.1","framework":"cis","status":"fail"}]}`)}
}

func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	admin := dbtest.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	base := dbtest.NewName()
	schema, owner, svc := base, base+"_owner", base+"_svc"
	// Registered first, so it runs last: after the pools below are closed.
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+pq.QuoteIdentifier(schema)+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		for _, role := range []string{svc, owner} {
			var n int
			if err := admin.GetContext(ctx, &n, `SELECT COUNT(*) FROM pg_roles WHERE rolname = $1`, role); err != nil || n == 0 {
				continue
			}
			for _, stmt := range []string{`DROP OWNED BY `, `DROP ROLE `} {
				if _, err := admin.ExecContext(ctx, stmt+pq.QuoteIdentifier(role)); err != nil {
					t.Errorf("%s%s: %v", stmt, role, err)
				}
			}
		}
	})
	vars := map[string]string{"schema": schema, "owner": owner, "svc": svc}
	_, err := admin.ExecContext(ctx, script(t, "roles.sql", vars))
	require.NoError(t, err)

	ownerDB := as(t, owner, schema)
	svcDB := as(t, svc, schema)
	pf := probefailures.New()
	reg := projection.Must(projection.NewRegistry(pf))
	sets := reg.MigrationSets() // Up and Status add the core set

	// The owner migrates the core; the service cannot migrate the rest.
	_, err = migrations.Up(ctx, ownerDB)
	require.NoError(t, err)
	_, err = migrations.Up(ctx, svcDB, sets...)
	requireDenied(t, err, "service migrates")
	t.Logf("service migrating: %v", err)

	ownerLog, err := eventlog.New(ownerDB, &eventlog.Config{Hook: reg})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ownerLog.Close() })
	_, err = projection.Migrate(ctx, ownerLog, reg)
	require.NoError(t, err)
	// What an older grants.sql gave: INSERT on every column of the log,
	// nextval on its sequence. The current file takes both back.
	_, err = ownerDB.ExecContext(ctx, `GRANT SELECT, INSERT ON event_log TO `+pq.QuoteIdentifier(svc)+`;
GRANT USAGE ON SEQUENCE event_log_seq_seq TO `+pq.QuoteIdentifier(svc))
	require.NoError(t, err)
	_, err = ownerDB.ExecContext(ctx, script(t, "grants.sql", vars))
	require.NoError(t, err)

	// With nothing pending, the service's migrate is a no-op; a set with
	// something to apply is refused.
	res, err := migrations.Up(ctx, svcDB, sets...)
	require.NoError(t, err)
	require.Empty(t, res)
	extra := migrations.Set{Name: "sneaky", Postgres: fstest.MapFS{"00001_sneaky.sql": {Data: []byte(
		"-- +goose Up\nCREATE TABLE sneaky (n int);\n-- +goose Down\nDROP TABLE sneaky;\n")}}}
	_, err = migrations.Up(ctx, svcDB, extra)
	requireDenied(t, err, "service migrates a new set")
	t.Logf("service migrating a new set: %v", err)

	t.Run("ServiceWorks", func(t *testing.T) {
		log, err := eventlog.New(svcDB, &eventlog.Config{Hook: reg})
		require.NoError(t, err)
		defer log.Close()

		one, err := log.Append(ctx, probeEntry("web-1", "e-1"))
		require.NoError(t, err)
		batch := []eventlog.Entry{probeEntry("web-2", "e-2"), probeEntry("web-3", "e-3"), probeEntry("web-4", "")}
		_, err = log.AppendBatch(ctx, batch) // the COPY path
		require.NoError(t, err)
		// A batch meeting a stored event id: the ON CONFLICT path.
		again, err := log.AppendBatch(ctx, []eventlog.Entry{probeEntry("web-1", "e-1"), probeEntry("web-5", "e-5")})
		require.NoError(t, err)
		require.True(t, again[0].Duplicate)
		require.Equal(t, one.Event.Seq, again[0].Event.Seq)
		tx, err := svcDB.BeginTxx(ctx, nil)
		require.NoError(t, err)
		_, err = log.AppendTx(ctx, tx, probeEntry("web-6", "e-6"))
		require.NoError(t, err)
		require.NoError(t, tx.Commit())

		evs, err := log.Query(ctx, eventlog.Filter{HostID: "web-2"})
		require.NoError(t, err)
		require.Len(t, evs, 1)
		got, err := log.Get(ctx, one.Event.Seq)
		require.NoError(t, err)
		require.Equal(t, "e-1", got.EventID)

		// The follower waits for the server-wide transaction horizon.
		fctx, fcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer fcancel()
		followed := 0
		for ev, err := range log.Follow(fctx, eventlog.Position{}, &eventlog.FollowOptions{PollInterval: 20 * time.Millisecond}) {
			require.NoError(t, err)
			require.Positive(t, ev.Seq)
			if followed++; followed == 3 {
				break
			}
		}

		store := probefailures.NewStore(svcDB)
		hosts, err := store.CountFailingHosts(ctx, "r1")
		require.NoError(t, err)
		require.Equal(t, 6, hosts)

		rebuilt, err := projection.Rebuild(ctx, log, reg, nil)
		require.NoError(t, err)
		require.Len(t, rebuilt, 1)
		require.Equal(t, int64(6), rebuilt[0].Events)
		// The service role may neither create schemas nor move the
		// migrator's tables: it rebuilds offline, and says why.
		require.False(t, rebuilt[0].Online)
		require.Contains(t, rebuilt[0].OfflineReason, "may not create schemas")
		verified, err := projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, verified[0].Equal, "%+v", verified[0])
		sts, err := projection.ReadStatus(ctx, log, reg)
		require.NoError(t, err)
		require.False(t, sts[0].Stale)
		_, err = projection.CheckStale(ctx, log, reg, projection.StaleRefuse)
		require.NoError(t, err)
		ms, err := migrations.Status(ctx, svcDB, sets...)
		require.NoError(t, err)
		require.NotEmpty(t, ms)
		for _, m := range ms {
			require.True(t, m.Applied, "%+v", m)
		}
	})

	t.Run("ServiceCannotRewriteHistory", func(t *testing.T) {
		// Without the trigger, only privileges stand in the way.
		_, err := admin.ExecContext(ctx, `DROP TRIGGER event_log_append_only ON `+pq.QuoteIdentifier(schema)+`.event_log`)
		require.NoError(t, err)
		// The owner could now change history (rolled back): the refusals
		// below come from the service's privileges, not from the trigger.
		tx, err := ownerDB.BeginTxx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, `UPDATE event_log SET host_id = 'evil'`)
		require.NoError(t, err)
		require.NoError(t, tx.Rollback())

		var before int
		require.NoError(t, svcDB.GetContext(ctx, &before, `SELECT COUNT(*) FROM event_log WHERE host_id <> 'evil'`))
		for _, stmt := range []string{
			`UPDATE event_log SET host_id = 'evil'`,
			`UPDATE event_log SET host_id = 'evil' WHERE seq = -1`,
			`DELETE FROM event_log`,
			`DELETE FROM event_log WHERE seq = -1`,
			`TRUNCATE event_log`,
			`TRUNCATE event_log CASCADE`,
			`ALTER TABLE event_log DISABLE TRIGGER ALL`,
			`ALTER TABLE event_log DROP CONSTRAINT event_log_event_id_key`,
			`ALTER TABLE event_log OWNER TO ` + pq.QuoteIdentifier(svc),
			`DROP TABLE event_log`,
			`DROP TABLE event_log CASCADE`,
			`CREATE OR REPLACE FUNCTION canonlog_event_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END; $$`,
			`DROP FUNCTION canonlog_event_log_append_only()`,
			`CREATE TABLE event_log_copy (seq bigint)`,
			`CREATE TRIGGER sneaky BEFORE INSERT ON event_log FOR EACH STATEMENT EXECUTE FUNCTION canonlog_event_log_append_only()`,
			`ALTER SEQUENCE event_log_seq_seq RESTART WITH 1`,
			`SELECT setval('event_log_seq_seq', 1)`,
			`DELETE FROM canonlog_projections`,
			`TRUNCATE probe_failures`,
		} {
			_, err := svcDB.ExecContext(ctx, stmt)
			requireDenied(t, err, stmt)
		}
		var after int
		require.NoError(t, svcDB.GetContext(ctx, &after, `SELECT COUNT(*) FROM event_log WHERE host_id <> 'evil'`))
		require.Equal(t, before, after)
		require.Equal(t, 6, after)
	})

	t.Run("ServiceOwnsNothing", func(t *testing.T) {
		var owned int
		require.NoError(t, admin.GetContext(ctx, &owned, `SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND pg_get_userbyid(c.relowner) = $2`, schema, svc))
		require.Zero(t, owned)
		var canCreate bool
		require.NoError(t, admin.GetContext(ctx, &canCreate, `SELECT has_schema_privilege($1, $2, 'CREATE')`, svc, schema))
		require.False(t, canCreate)
		for _, priv := range []string{"UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"} {
			var has bool
			require.NoError(t, admin.GetContext(ctx, &has, `SELECT has_table_privilege($1, $2, $3)`,
				svc, schema+".event_log", priv))
			require.False(t, has, "service has %s on event_log", priv)
		}
		for _, col := range []string{"seq", "tx_id"} {
			var has bool
			require.NoError(t, admin.GetContext(ctx, &has, `SELECT has_column_privilege($1, $2, $3, 'INSERT')`,
				svc, schema+".event_log", col))
			require.False(t, has, "service may insert event_log.%s", col)
		}
		for _, priv := range []string{"USAGE", "UPDATE"} {
			var has bool
			require.NoError(t, admin.GetContext(ctx, &has, `SELECT has_sequence_privilege($1, $2, $3)`,
				svc, schema+".event_log_seq_seq", priv))
			require.False(t, has, "service has %s on event_log_seq_seq", priv)
		}
	})
	t.Run("ServiceRunsTheApp", func(t *testing.T) {
		// The module as a service runs it: with migrations off, and with
		// migrations on start (the default), which has nothing to apply
		// once the owner migrated and so needs no DDL.
		for _, skip := range []bool{true, false} {
			var (
				log   *eventlog.Log
				store *probefailures.Store
			)
			a := fxtest.New(t, fx.NopLogger,
				fx.Supply(app.Config{DatabaseURL: roleURL(t, svc, schema), SkipMigrate: skip}),
				app.Module, app.ProbeFailuresModule, fx.Populate(&log, &store))
			a.RequireStart()
			before, err := store.CountFailingHosts(ctx, "r1")
			require.NoError(t, err)
			_, err = log.Append(ctx, probeEntry(fmt.Sprintf("app-%t", skip), fmt.Sprintf("app-%t", skip)))
			require.NoError(t, err)
			after, err := store.CountFailingHosts(ctx, "r1")
			require.NoError(t, err)
			require.Equal(t, before+1, after)
			a.RequireStop()
		}
	})
	// The owner, granted CREATE on the database, rebuilds online. Its
	// build has PostgreSQL check the copy's foreign keys row by row until
	// it is granted SET on session_replication_role; either way the view
	// equals the log and its key stays valid and enforced.
	t.Run("OwnerRebuildsOnline", func(t *testing.T) {
		_, err := admin.ExecContext(ctx, `GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(dbName(t, admin))+` TO `+pq.QuoteIdentifier(owner))
		require.NoError(t, err)
		rebuild := func(wantUnchecked bool) {
			t.Helper()
			rebuilt, err := projection.Rebuild(ctx, ownerLog, reg, nil)
			require.NoError(t, err)
			require.True(t, rebuilt[0].Online, "%+v", rebuilt[0])
			require.Equal(t, wantUnchecked, rebuilt[0].UncheckedKeys)
			verified, err := projection.Verify(ctx, ownerLog, reg, nil)
			require.NoError(t, err)
			require.True(t, verified[0].Equal, "%+v", verified[0])
			var valid bool
			require.NoError(t, ownerDB.GetContext(ctx, &valid, `SELECT convalidated FROM pg_constraint
WHERE conrelid = 'probe_failures'::regclass AND contype = 'f'`))
			require.True(t, valid)
			_, err = ownerDB.ExecContext(ctx, `INSERT INTO probe_failures (event_log_seq, host_id, probe_name, control_id, framework, observed_at)
VALUES (-1, 'h', 'p', 'c', 'f', now())`)
			var pqErr *pq.Error
			require.ErrorAs(t, err, &pqErr)
			require.Equal(t, "23503", string(pqErr.Code), "foreign_key_violation: %v", err)
		}
		rebuild(false)
		_, err = admin.ExecContext(ctx, `GRANT SET ON PARAMETER session_replication_role TO `+pq.QuoteIdentifier(owner))
		require.NoError(t, err)
		rebuild(true)
	})
	// Last: it drops the trigger that refuses explicit seqs and tx_ids.
	t.Run("ServiceCannotForgePositions", func(t *testing.T) {
		log, err := eventlog.New(svcDB, &eventlog.Config{Hook: reg})
		require.NoError(t, err)
		defer log.Close()
		head, err := log.LastSeq(ctx)
		require.NoError(t, err)
		var gap int64 // a seq given up by a rolled-back append
		tx, err := svcDB.BeginTxx(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, tx.GetContext(ctx, &gap, `INSERT INTO event_log (ts, kind, payload) VALUES (now(), 'effect', '{}') RETURNING seq`))
		require.NoError(t, tx.Rollback())
		state := func() string {
			var s string
			require.NoError(t, svcDB.GetContext(ctx, &s, `SELECT COUNT(*) || '/' || COALESCE(MAX(seq), 0) || '/' || COALESCE(string_agg(tx_id::text, ',' ORDER BY seq), '') FROM event_log`))
			return s
		}
		before := state()
		forge := func(t *testing.T, db *sqlx.DB, what string) {
			t.Helper()
			for _, stmt := range []string{
				fmt.Sprintf(`INSERT INTO event_log (seq, ts, kind, payload) OVERRIDING SYSTEM VALUE VALUES (%d, now(), 'effect', '{}')`, head+1000),
				fmt.Sprintf(`INSERT INTO event_log (seq, ts, kind, payload) OVERRIDING SYSTEM VALUE VALUES (%d, now(), 'effect', '{}')`, gap),
				`INSERT INTO event_log (ts, kind, payload, tx_id) VALUES (now(), 'effect', '{}', '1')`,
				`INSERT INTO event_log (ts, kind, payload, tx_id) SELECT now(), 'effect', '{}', tx_id FROM event_log ORDER BY seq LIMIT 1`,
			} {
				_, err := db.ExecContext(ctx, stmt)
				requireDenied(t, err, what+": "+stmt)
			}
			for _, cols := range []string{"seq, ts, kind, payload", "ts, kind, payload, tx_id"} {
				requireDenied(t, dbtest.CopyRow(ctx, db.DB, cols, head+2000), what+": COPY "+cols)
			}
			require.Equal(t, before, state(), what)
		}
		forge(t, svcDB, "service")
		_, err = svcDB.ExecContext(ctx, `SELECT nextval('event_log_seq_seq')`)
		requireDenied(t, err, "service draws a seq")

		// The owner may name every column, and is refused by the trigger.
		tx, err = ownerDB.BeginTxx(ctx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, `INSERT INTO event_log (ts, kind, payload) VALUES (now(), 'effect', '{}')`) // draws a seq: currval is defined
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO event_log (seq, ts, kind, payload) OVERRIDING SYSTEM VALUE VALUES (%d, now(), 'effect', '{}')`, head+1000))
		requireDenied(t, err, "owner inserts a seq")
		require.ErrorContains(t, err, "explicit seq")
		require.NoError(t, tx.Rollback())

		// Without the trigger, the service's privileges still refuse.
		_, err = admin.ExecContext(ctx, `DROP TRIGGER event_log_assigned_only ON `+pq.QuoteIdentifier(schema)+`.event_log`)
		require.NoError(t, err)
		forge(t, svcDB, "service, no trigger")

		// The service's appends carry on from the real head.
		res, err := log.Append(ctx, probeEntry("web-9", "e-9"))
		require.NoError(t, err)
		require.Greater(t, res.Event.Seq, head)
		last, err := log.LastSeq(ctx)
		require.NoError(t, err)
		require.Equal(t, res.Event.Seq, last)
	})
}

// dbName returns the name of the database db is connected to.
func dbName(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var name string
	require.NoError(t, db.Get(&name, `SELECT current_database()`))
	return name
}

// docs/reliability.md shows both scripts as they are.
func TestDocsShowTheScripts(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/reliability.md")
	require.NoError(t, err)
	for _, file := range []string{"roles.sql", "grants.sql"} {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		require.Contains(t, string(doc), "```sql\n"+string(b)+"```", "docs/reliability.md must show %s as it is", file)
	}
}
