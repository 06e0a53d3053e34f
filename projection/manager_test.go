package projection_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// newManager assembles canonlog on db with ps registered.
func newManager(t *testing.T, db *sqlx.DB, cfg *projection.ManagerConfig, ps ...projection.Projection) *projection.Manager {
	t.Helper()
	reg, err := projection.NewRegistry(ps...)
	require.NoError(t, err)
	clock := eventlogtest.NewFakeClock(t0)
	clock.SetStep(time.Millisecond)
	c := projection.ManagerConfig{Log: &eventlog.Config{Clock: clock}}
	if cfg != nil {
		c.AllowDrift = cfg.AllowDrift
	}
	m, err := projection.NewManager(db, reg, &c)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

func logCount(t *testing.T, db *sqlx.DB) (n int, last int64) {
	t.Helper()
	require.NoError(t, db.QueryRowx(`SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM event_log`).Scan(&n, &last))
	return n, last
}

func TestManager(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		const deploy, effect eventlog.Kind = "deploy_step", eventlog.KindEffect

		// setup gives a database on which a service installed test_view
		// (consuming deploy_step only), and a "stock" manager that does
		// not register it.
		setup := func(t *testing.T, cfg *projection.ManagerConfig) (svc, stock *projection.Manager, db *sqlx.DB) {
			db = dbtest.New(t, backend).Open(t)
			svc = newManager(t, db, nil, &kindView{testView{kinds: []eventlog.Kind{deploy}}})
			_, err := svc.Migrate(ctx)
			require.NoError(t, err)
			stock = newManager(t, db, cfg)
			require.NoError(t, stock.Load(ctx))
			return svc, stock, db
		}

		t.Run("StatusListsUnregistered", func(t *testing.T) {
			_, stock, _ := setup(t, nil)
			sts, err := stock.Status(ctx)
			require.NoError(t, err)
			st, ok := sts.Get("test_view")
			require.True(t, ok, "%+v", sts)
			require.False(t, st.Registered)
			require.False(t, st.Stale, "another binary's view is not judged")
			require.Equal(t, []eventlog.Kind{deploy}, st.Kinds)
			require.False(t, st.AllKinds)
			require.Equal(t, 1, st.BuiltVersion)
			require.Len(t, sts.Unregistered(), 1)
		})

		t.Run("AppendOfConsumedKindRefused", func(t *testing.T) {
			svc, stock, db := setup(t, nil)
			before, _ := logCount(t, db)
			_, err := stock.Log().Append(ctx, ev(deploy, "h1", `{}`))
			var ue *projection.UnregisteredError
			require.ErrorAs(t, err, &ue)
			require.ErrorIs(t, err, projection.ErrUnregistered)
			require.Equal(t, []string{"test_view"}, ue.Names)
			require.Equal(t, deploy, ue.Kind)
			require.Contains(t, err.Error(), "append of kind deploy_step refused: projection test_view is recorded in this database as consuming that kind")
			// A batch with one such entry is refused whole.
			_, err = stock.Log().AppendBatch(ctx, []eventlog.Entry{ev(effect, "h1", `{}`), ev(deploy, "h2", `{}`)})
			require.ErrorIs(t, err, projection.ErrUnregistered)
			after, _ := logCount(t, db)
			require.Equal(t, before, after, "a refused append writes nothing")

			// Kinds nobody else consumes go through; the owner appends
			// everything and its view stays equal to the log.
			_, err = stock.Log().Append(ctx, ev(effect, "h1", `{}`))
			require.NoError(t, err)
			_, err = svc.Log().Append(ctx, ev(deploy, "h3", `{}`))
			require.NoError(t, err)
			res, err := svc.Verify(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, res.Err())
		})

		t.Run("AllowDriftMarksStaleUntilRebuilt", func(t *testing.T) {
			svc, stock, db := setup(t, &projection.ManagerConfig{AllowDrift: true})
			r, err := stock.Log().Append(ctx, ev(deploy, "h1", `{}`))
			require.NoError(t, err)
			n, _ := logCount(t, db)
			require.Equal(t, 1, n)

			sts, err := svc.Status(ctx)
			require.NoError(t, err)
			st, _ := sts.Get("test_view")
			require.True(t, st.Stale, "%+v", st)
			require.Equal(t, r.Event.Seq, st.DriftSeq)
			_, err = svc.CheckStale(ctx, projection.StaleRefuse)
			require.ErrorIs(t, err, projection.ErrStale)
			require.ErrorContains(t, err, fmt.Sprintf("test_view (version 1, seq %d appended without it by another binary)", r.Event.Seq))

			vr, err := svc.Verify(ctx, nil)
			require.NoError(t, err)
			var de *projection.DifferenceError
			require.ErrorAs(t, vr.Err(), &de)
			require.ErrorIs(t, vr.Err(), projection.ErrDifferent)
			require.Equal(t, int64(1), de.Results[0].Missing)

			_, err = svc.Rebuild(ctx, nil)
			require.NoError(t, err)
			sts, err = svc.Status(ctx)
			require.NoError(t, err)
			st, _ = sts.Get("test_view")
			require.False(t, st.Stale, "%+v", st)
			vr, err = svc.Verify(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, vr.Err())
		})

		t.Run("AllowDriftWaitsForTheOwnersRebuild", func(t *testing.T) {
			if backend != "postgres" {
				t.Skip("SQLite runs one writer at a time")
			}
			svc, stock, _ := setup(t, &projection.ManagerConfig{AllowDrift: true})
			_, err := svc.Log().Append(ctx, ev(deploy, "h0", `{}`))
			require.NoError(t, err)
			locked, release := make(chan struct{}), make(chan struct{})
			var released bool
			releaseOnce := func() {
				if !released {
					released = true
					close(release)
				}
			}
			defer releaseOnce() // on failure too, or the rebuild holds its transaction open
			rebuilt := make(chan error, 1)
			go func() {
				var once bool
				_, err := svc.Rebuild(ctx, &projection.RebuildOptions{Offline: true, Progress: func(projection.Progress) {
					if !once {
						once = true
						close(locked)
						<-release
					}
				}})
				rebuilt <- err
			}()
			<-locked
			appended := make(chan error, 1)
			go func() {
				_, err := stock.Log().Append(ctx, ev(deploy, "h1", `{}`))
				appended <- err
			}()
			select {
			case err := <-appended:
				t.Fatalf("an append that skips test_view committed while its rebuild held the lock: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			releaseOnce()
			require.NoError(t, <-rebuilt)
			require.NoError(t, <-appended)
			sts, err := svc.Status(ctx)
			require.NoError(t, err)
			st, _ := sts.Get("test_view")
			require.True(t, st.Stale, "the drifted append came after the rebuild: %+v", st)
		})

		t.Run("RebuildAndVerifyOfUnregistered", func(t *testing.T) {
			_, stock, _ := setup(t, nil)
			_, err := stock.Rebuild(ctx, &projection.RebuildOptions{Names: []string{"test_view"}})
			require.ErrorIs(t, err, projection.ErrUnregistered)
			require.EqualError(t, err, "rebuild: projection test_view is registered by another binary, not this one: run rebuild with the binary that registers it (such as the service's own operator command)")
			_, err = stock.Verify(ctx, []string{"test_view"})
			require.ErrorIs(t, err, projection.ErrUnregistered)
			_, err = stock.Verify(ctx, []string{"no_such_view"})
			require.ErrorIs(t, err, projection.ErrUnknownProjection)
			require.False(t, errors.Is(err, projection.ErrUnregistered))
		})

		t.Run("KindsNotRecordedMeansEvery", func(t *testing.T) {
			_, _, db := setup(t, nil)
			// A checkpoint written before kinds were recorded.
			_, err := db.Exec(`UPDATE canonlog_projections SET kinds = NULL WHERE name = 'test_view'`)
			require.NoError(t, err)
			stock := newManager(t, db, nil)
			require.NoError(t, stock.Load(ctx))
			_, err = stock.Log().Append(ctx, ev(effect, "h1", `{}`))
			require.ErrorIs(t, err, projection.ErrUnregistered)
			sts, err := stock.Status(ctx)
			require.NoError(t, err)
			st, _ := sts.Get("test_view")
			require.True(t, st.AllKinds)

			// The owner's next Migrate records them again.
			svc := newManager(t, db, nil, &kindView{testView{kinds: []eventlog.Kind{deploy}}})
			_, err = svc.Migrate(ctx)
			require.NoError(t, err)
			require.NoError(t, stock.Load(ctx))
			_, err = stock.Log().Append(ctx, ev(effect, "h1", `{}`))
			require.NoError(t, err)
		})

		t.Run("KindsFollowTheRegistration", func(t *testing.T) {
			_, _, db := setup(t, nil)
			svc := newManager(t, db, nil, &kindView{testView{kinds: []eventlog.Kind{deploy, effect}}})
			_, err := svc.Migrate(ctx)
			require.NoError(t, err)
			var kinds string
			require.NoError(t, db.Get(&kinds, `SELECT kinds FROM canonlog_projections WHERE name = 'test_view'`))
			require.Equal(t, "deploy_step,effect", kinds)
			every := newManager(t, db, nil, &testView{})
			_, err = every.Migrate(ctx)
			require.NoError(t, err)
			require.NoError(t, db.Get(&kinds, `SELECT kinds FROM canonlog_projections WHERE name = 'test_view'`))
			require.Equal(t, "*", kinds)
		})

		t.Run("NotInstalled", func(t *testing.T) {
			db := dbtest.New(t, backend).Migrated(t) // canonlog's core only
			m := newManager(t, db, nil, &kindView{testView{kinds: []eventlog.Kind{deploy}}})
			require.NoError(t, m.CheckSchema(ctx), "a projection not installed is no schema error")
			_, err := m.Log().Append(ctx, ev(deploy, "h1", `{}`))
			var ne *projection.NotInstalledError
			require.ErrorAs(t, err, &ne)
			require.ErrorIs(t, err, projection.ErrNotInstalled)
			require.Equal(t, []string{"test_view"}, ne.Names)
			n, _ := logCount(t, db)
			require.Zero(t, n)
			_, err = m.Log().Append(ctx, ev(effect, "h1", `{}`))
			require.NoError(t, err, "kinds it does not consume go through")
			_, err = m.Rebuild(ctx, &projection.RebuildOptions{Names: []string{"test_view"}})
			require.ErrorIs(t, err, projection.ErrNotInstalled)
			res, err := m.Rebuild(ctx, nil)
			require.NoError(t, err)
			require.Empty(t, res, "without names only installed projections are rebuilt")
			sts, err := m.Status(ctx)
			require.NoError(t, err)
			st, _ := sts.Get("test_view")
			require.False(t, st.Installed)

			_, err = m.Migrate(ctx)
			require.NoError(t, err)
			_, err = m.Log().Append(ctx, ev(deploy, "h1", `{}`))
			require.NoError(t, err)
			vr, err := m.Verify(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, vr.Err())
		})

		t.Run("CheckSchema", func(t *testing.T) {
			db := dbtest.New(t, backend).Open(t)
			m := newManager(t, db, nil, &testView{})
			err := m.CheckSchema(ctx)
			require.ErrorIs(t, err, projection.ErrSchema)
			var se *projection.SchemaError
			require.ErrorAs(t, err, &se)
			require.Equal(t, "event_log", se.Table)
			_, err = m.Migrate(ctx)
			require.NoError(t, err)
			require.NoError(t, m.CheckSchema(ctx))
		})
	})
}

func TestNewManagerRefusesBadInput(t *testing.T) {
	db := dbtest.New(t, "sqlite").Open(t)
	reg := projection.Must(projection.NewRegistry())
	_, err := projection.NewManager(nil, reg, nil)
	require.ErrorContains(t, err, "db is nil")
	_, err = projection.NewManager(db, nil, nil)
	require.ErrorContains(t, err, "registry is nil")
	_, err = projection.NewManager(db, reg, &projection.ManagerConfig{Log: &eventlog.Config{Hook: reg}})
	require.ErrorContains(t, err, "ManagerConfig.Log.Hook is set")
}
