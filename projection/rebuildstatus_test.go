package projection_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// renamedView is testView under another projection name (its table stays
// test_view).
type renamedView struct {
	testView
	name string
}

func (v *renamedView) Name() string { return v.name }

// rebuildSchemaName is the name of an online rebuild's schema of
// projection name in schema live (role "rebuild" for the shadow, "retired"
// for the old tables), written out here as the tests expect it:
// live__role_name when that fits in PostgreSQL's 63 bytes, else with a
// hash of the live schema and the projection in place of the projection's
// name, else canonlog_role_hash.
func rebuildSchemaName(live, role, name string) string {
	if s := live + "__" + role + "_" + name; len(s) <= 63 {
		return s
	}
	sum := sha256.Sum256([]byte(live + "." + name))
	h := hex.EncodeToString(sum[:8])
	if s := live + "__" + role + "_" + h; len(s) <= 63 {
		return s
	}
	return "canonlog_" + role + "_" + h
}

func currentSchema(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var s string
	require.NoError(t, db.Get(&s, `SELECT current_schema()`))
	return s
}

func schemaExists(t *testing.T, db *sqlx.DB, name string) bool {
	t.Helper()
	var n int
	require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1`, name))
	return n == 1
}

// stopRebuild starts an online rebuild of projection name and, as its
// build begins, terminates the rebuild's session on the server, as a
// crash of its process or a lost connection would: the rebuild fails and
// its shadow schema stays behind.
func stopRebuild(t *testing.T, log *eventlog.Log, reg *projection.Registry, name string) {
	t.Helper()
	ctx := context.Background()
	killed := false
	var held *sqlx.Conn
	_, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{name}, Progress: func(p projection.Progress) {
		if killed || p.Phase != projection.PhaseBuild {
			return
		}
		killed = true
		var pid int
		require.NoError(t, log.DB().Get(&pid, `SELECT l.pid FROM pg_locks AS l,
	(SELECT hashtextextended(current_schema() || ':' || $1, 0) AS k) AS key
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = (key.k >> 32) & 4294967295 AND l.objid::bigint = key.k & 4294967295`, "canonlog:rebuild:"+name))
		var ok bool
		require.NoError(t, log.DB().Get(&ok, `SELECT pg_terminate_backend($1, 10000)`, pid))
		require.True(t, ok, "the rebuild's session ended")
		// A process that died would clean nothing up; this one, still
		// alive, would drop its schema from another connection once it
		// finds its own gone — unless the rebuild lock is taken by then,
		// as by a rebuild started since. Take it until Rebuild returns.
		var err error
		held, err = log.DB().Connx(ctx)
		require.NoError(t, err)
		_, err = held.ExecContext(ctx, `SELECT pg_advisory_lock(hashtextextended(current_schema() || ':' || $1, 0))`, "canonlog:rebuild:"+name)
		require.NoError(t, err)
	}})
	require.True(t, killed, "the rebuild reached its build phase")
	require.Error(t, err, "a rebuild whose session was terminated fails")
	_, err = held.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtextextended(current_schema() || ':' || $1, 0))`, "canonlog:rebuild:"+name)
	require.NoError(t, err)
	require.NoError(t, held.Close())
}

func TestRebuildStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// While an online rebuild runs, Status shows it with the phase it
	// reports, and Migrate leaves its schema alone; once it is done,
	// nothing is left. SQLite shows nothing: its copy lives in the
	// rebuild's own connection.
	t.Run("Running", func(t *testing.T) {
		t.Parallel()
		dbtest.Run(t, func(t *testing.T, backend string) {
			log, reg, db := setup(t, backend, &testView{})
			m, err := projection.NewManager(db, reg, nil)
			require.NoError(t, err)
			for i := range 50 {
				_, err := log.Append(ctx, ev(eventlog.KindEffect, fmt.Sprintf("h%d", i), `{}`))
				require.NoError(t, err)
			}
			var shadow string
			if backend == "postgres" {
				shadow = rebuildSchemaName(currentSchema(t, db), "rebuild", "test_view")
			}
			var phases []projection.Phase
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 10, Progress: func(p projection.Progress) {
				if len(phases) > 0 && phases[len(phases)-1] == p.Phase {
					return
				}
				phases = append(phases, p.Phase)
				sts, err := projection.ReadStatus(ctx, log, reg)
				require.NoError(t, err)
				msts, err := m.Status(ctx)
				require.NoError(t, err)
				st, _ := sts.Get("test_view")
				mst, _ := msts.Get("test_view")
				if backend == "sqlite" {
					require.Nil(t, st.Rebuild)
					require.Nil(t, mst.Rebuild)
					return
				}
				require.Equal(t, st.Rebuild, mst.Rebuild, "ReadStatus and Manager.Status agree")
				r := st.Rebuild
				require.NotNil(t, r, "%s: a running rebuild shows", p.Phase)
				require.True(t, r.Running)
				require.Equal(t, []string{shadow}, r.Schemas)
				require.Equal(t, p.Phase, r.Phase, "the phase is recorded before Progress reports it")
				require.Equal(t, p.Done, r.Done)
				require.Equal(t, p.Total, r.Total)
				require.False(t, r.StartedAt.IsZero())
				require.False(t, r.UpdatedAt.Before(r.StartedAt))
				require.WithinDuration(t, time.Now(), r.UpdatedAt, time.Minute)

				_, err = projection.Migrate(ctx, log, reg)
				require.NoError(t, err)
				require.True(t, schemaExists(t, db, shadow), "Migrate leaves a running rebuild's schema")
			}})
			require.NoError(t, err)
			require.True(t, res[0].Online)
			require.Equal(t, []projection.Phase{projection.PhaseBuild, projection.PhaseCatchUp, projection.PhaseSwap}, phases)
			require.Equal(t, 50, count(t, db, "test_view"))

			sts, err := m.Status(ctx)
			require.NoError(t, err)
			st, _ := sts.Get("test_view")
			require.Nil(t, st.Rebuild, "a finished rebuild leaves nothing")
			if backend == "postgres" {
				require.False(t, schemaExists(t, db, shadow))
				require.False(t, schemaExists(t, db, rebuildSchemaName(currentSchema(t, db), "retired", "test_view")))
			}
		})
	})

	// A rebuild whose session ends mid-way leaves its shadow schema: Status
	// shows it as not running, with the progress it had recorded; Migrate
	// drops it, and so does the next rebuild.
	t.Run("Stopped", func(t *testing.T) {
		t.Parallel()
		log, reg, db := setup(t, "postgres", &testView{})
		m, err := projection.NewManager(db, reg, nil)
		require.NoError(t, err)
		for i := range 20 {
			_, err := log.Append(ctx, ev(eventlog.KindEffect, fmt.Sprintf("h%d", i), `{}`))
			require.NoError(t, err)
		}
		shadow := rebuildSchemaName(currentSchema(t, db), "rebuild", "test_view")
		stopRebuild(t, log, reg, "test_view")

		sts, err := m.Status(ctx)
		require.NoError(t, err)
		st, _ := sts.Get("test_view")
		r := st.Rebuild
		require.NotNil(t, r)
		require.False(t, r.Running, "the stopped rebuild's lock went with its session")
		require.Equal(t, []string{shadow}, r.Schemas)
		require.Equal(t, projection.PhaseBuild, r.Phase)
		require.Equal(t, int64(20), r.Total)
		require.False(t, r.StartedAt.IsZero())
		require.False(t, st.Stale, "the live view is untouched")
		require.Equal(t, 20, count(t, db, "test_view"))

		// Migrate drops it.
		_, err = m.Migrate(ctx)
		require.NoError(t, err)
		require.False(t, schemaExists(t, db, shadow))
		sts, err = projection.ReadStatus(ctx, log, reg)
		require.NoError(t, err)
		st, _ = sts.Get("test_view")
		require.Nil(t, st.Rebuild)

		// So does the next rebuild, which then succeeds.
		stopRebuild(t, log, reg, "test_view")
		require.True(t, schemaExists(t, db, shadow))
		res, err := projection.Rebuild(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, res[0].Online)
		require.False(t, schemaExists(t, db, shadow))
	})

	// A role that may not read the shadow schema sees the leftover, with
	// its progress unknown, and Status does not fail.
	t.Run("Unreadable", func(t *testing.T) {
		t.Parallel()
		log, reg, db := setup(t, "postgres", &testView{})
		live := currentSchema(t, db)
		role := dbtest.NewName()
		admin := dbtest.Admin(t)
		// Registered before the role's pool, so it runs after the pool is
		// closed.
		t.Cleanup(func() {
			for _, stmt := range []string{`DROP OWNED BY `, `DROP ROLE IF EXISTS `} {
				if _, err := admin.Exec(stmt + pq.QuoteIdentifier(role)); err != nil {
					t.Errorf("%s%s: %v", stmt, role, err)
				}
			}
		})
		for _, stmt := range []string{
			`CREATE ROLE ` + pq.QuoteIdentifier(role) + ` LOGIN`,
			`GRANT USAGE ON SCHEMA ` + pq.QuoteIdentifier(live) + ` TO ` + pq.QuoteIdentifier(role),
			`GRANT SELECT ON canonlog_projections TO ` + pq.QuoteIdentifier(role),
		} {
			_, err := db.Exec(stmt)
			require.NoError(t, err)
		}
		_, err := log.Append(ctx, ev(eventlog.KindEffect, "h", `{}`))
		require.NoError(t, err)
		stopRebuild(t, log, reg, "test_view")

		u, err := dbtest.URL(role, live)
		require.NoError(t, err)
		roleDB, err := eventlog.OpenDB(ctx, u)
		require.NoError(t, err)
		t.Cleanup(func() { _ = roleDB.Close() })
		roleLog, err := eventlog.New(roleDB, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = roleLog.Close() })
		sts, err := projection.ReadStatus(ctx, roleLog, reg)
		require.NoError(t, err)
		st, _ := sts.Get("test_view")
		require.Equal(t, &projection.RebuildState{Schemas: []string{rebuildSchemaName(live, "rebuild", "test_view")}}, st.Rebuild)

		// The owner sees the progress.
		sts, err = projection.ReadStatus(ctx, log, reg)
		require.NoError(t, err)
		st, _ = sts.Get("test_view")
		require.Equal(t, projection.PhaseBuild, st.Rebuild.Phase)
	})

	// The schema names take a hash when the live schema's name and the
	// projection's do not fit in 63 bytes: Status finds them all the same,
	// and Migrate drops them.
	t.Run("HashedNames", func(t *testing.T) {
		t.Parallel()
		long := &renamedView{name: "test_view_named_long_enough_to_be_hashed"}
		log, reg, db := setup(t, "postgres", long)
		live := currentSchema(t, db)
		admin := dbtest.Admin(t)

		// A live schema whose name leaves no room: named after the
		// test's, so that the test's cleanup drops it.
		longLive := live + "__live_schema_with_a_long_name"
		_, err := db.Exec(`CREATE SCHEMA ` + pq.QuoteIdentifier(longLive))
		require.NoError(t, err)
		u, err := dbtest.URL("", longLive)
		require.NoError(t, err)
		longDB, err := eventlog.OpenDB(ctx, u)
		require.NoError(t, err)
		longDB.SetMaxOpenConns(dbtest.MaxConns)
		t.Cleanup(func() { _ = longDB.Close() })
		view := &testView{}
		longReg, err := projection.NewRegistry(view)
		require.NoError(t, err)
		longLog, err := eventlog.New(longDB, &eventlog.Config{Hook: longReg})
		require.NoError(t, err)
		t.Cleanup(func() { _ = longLog.Close() })
		_, err = projection.Migrate(ctx, longLog, longReg)
		require.NoError(t, err)

		cases := []struct {
			log    *eventlog.Log
			reg    *projection.Registry
			live   string
			name   string
			prefix string
		}{
			{log, reg, live, long.name, live + "__rebuild_"},
			{longLog, longReg, longLive, "test_view", "canonlog_rebuild_"},
		}
		for _, c := range cases {
			shadow := rebuildSchemaName(c.live, "rebuild", c.name)
			require.Len(t, shadow, len(c.prefix)+16, "the case takes the form it is meant to")
			require.Equal(t, c.prefix, shadow[:len(c.prefix)])
			// canonlog_rebuild_… is not named after the test's schema.
			t.Cleanup(func() {
				_, _ = admin.Exec(`DROP SCHEMA IF EXISTS ` + pq.QuoteIdentifier(shadow) + ` CASCADE`)
			})
			_, err := c.log.Append(ctx, ev(eventlog.KindEffect, "h", `{}`))
			require.NoError(t, err)
			stopRebuild(t, c.log, c.reg, c.name)
			require.True(t, schemaExists(t, db, shadow))

			sts, err := projection.ReadStatus(ctx, c.log, c.reg)
			require.NoError(t, err)
			st, _ := sts.Get(c.name)
			require.NotNil(t, st.Rebuild, "%s", shadow)
			require.False(t, st.Rebuild.Running)
			require.Equal(t, []string{shadow}, st.Rebuild.Schemas)
			require.Equal(t, projection.PhaseBuild, st.Rebuild.Phase)

			_, err = projection.Migrate(ctx, c.log, c.reg)
			require.NoError(t, err)
			require.False(t, schemaExists(t, db, shadow))
		}
	})
}
