package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// The module opens pools and closes them on stop: any goroutine left behind
// (a pool's connection opener, a lingering start hook) fails the package.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// services is what a test pulls out of the graph.
type services struct {
	DB       *sqlx.DB
	Log      *eventlog.Log
	Registry *projection.Registry
	Store    *probefailures.Store
}

// setup builds an fx test app with Module, ProbeFailuresModule and the
// given options on cfg, not yet started.
func setup(t *testing.T, cfg app.Config, opts ...fx.Option) (*fxtest.App, *services) {
	t.Helper()
	s := &services{}
	all := append([]fx.Option{
		fx.Supply(cfg),
		app.Module,
		app.ProbeFailuresModule,
		fx.Populate(&s.DB, &s.Log, &s.Registry, &s.Store),
	}, opts...)
	return fxtest.New(t, all...), s
}

// startErr builds an app like setup and returns the error of fx.New or of
// Start; it stops the app if it did start.
func startErr(t *testing.T, cfg app.Config, opts ...fx.Option) error {
	t.Helper()
	all := append([]fx.Option{fx.NopLogger, fx.Supply(cfg), app.Module, app.ProbeFailuresModule}, opts...)
	a := fx.New(all...)
	if err := a.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := a.Start(ctx)
	if err == nil {
		require.NoError(t, a.Stop(ctx))
	}
	return err
}

func probeResult(host, rollout, control, eventID string) eventlog.Entry {
	return eventlog.Entry{
		Kind: eventlog.KindAgentEvent, HostID: host, RolloutID: rollout, EventID: eventID,
		Payload: json.RawMessage(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh",` +
			`"sub_results":[{"control_id":"` + control + `","framework":"cis","status":"fail"}]}`),
	}
}

// requireClosed proves db was closed: database/sql refuses a closed pool.
// It exports no sentinel for that, hence the message.
func requireClosed(t *testing.T, db *sqlx.DB) {
	t.Helper()
	require.ErrorContains(t, db.PingContext(context.Background()), "database is closed")
}

func TestModule(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		t.Run("starts_migrates_and_closes_what_it_opened", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			clock := eventlogtest.NewFakeClock(time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC))
			a, s := setup(t, app.Config{DatabaseURL: b.URL, Clock: clock}, app.AsProjection(hostSeen{}))
			a.RequireStart()

			require.Equal(t, []string{"host_seen", "probe_failures"}, s.Registry.Names())
			require.Same(t, s.DB, s.Log.DB())
			res, err := s.Log.Append(ctx, probeResult("web-1", "r-1", "CIS-5.2.1", "web-1/1"))
			require.NoError(t, err)
			require.Equal(t, clock.Now(), res.Event.TS, "the configured clock stamps entries")
			hosts, err := s.Store.FailingHosts(ctx, "r-1", "CIS-5.2.1")
			require.NoError(t, err)
			require.Equal(t, []string{"web-1"}, hosts)
			sts, err := projection.ReadStatus(ctx, s.Log, s.Registry)
			require.NoError(t, err)
			for _, st := range sts {
				require.False(t, st.Stale, st.Name)
			}

			a.RequireStop()
			requireClosed(t, s.DB)
		})

		t.Run("uses_a_supplied_database_and_leaves_it_open", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			db := b.Open(t) // closed by the test's cleanup, not by the module
			a, s := setup(t, app.Config{}, app.WithDB(db))
			a.RequireStart()
			require.Same(t, db, s.DB)
			_, err := s.Log.Append(ctx, probeResult("web-1", "r-1", "CIS-1", "e-1"))
			require.NoError(t, err)
			a.RequireStop()

			require.NoError(t, db.PingContext(ctx))
			var n int
			require.NoError(t, db.GetContext(ctx, &n, `SELECT COUNT(*) FROM probe_failures`))
			require.Equal(t, 1, n, "the module migrated and wrote to the supplied database")
		})

		t.Run("uses_a_database_from_a_constructor_and_leaves_it_open", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			var opened *sqlx.DB
			a, s := setup(t, app.Config{}, app.ProvideDB(func() (*sqlx.DB, error) {
				db, err := eventlog.OpenDB(ctx, b.URL)
				opened = db
				return db, err
			}))
			a.RequireStart()
			require.Same(t, opened, s.DB)
			a.RequireStop()
			require.NoError(t, opened.PingContext(ctx), "the constructor owns it: still open")
			require.NoError(t, opened.Close())
		})

		t.Run("application_projection_is_applied_in_the_append_transaction", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			a, s := setup(t, app.Config{DatabaseURL: b.URL}, app.AsProjection(hostSeen{}))
			a.RequireStart()
			defer a.RequireStop()

			_, err := s.Log.AppendBatch(ctx, []eventlog.Entry{
				statusReport("web-1", "healthy", "a"), statusReport("web-2", "healthy", "b"), statusReport("web-1", "degraded", "c"),
			})
			require.NoError(t, err)
			rows, err := hostSeenRows(ctx, s.DB)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=degraded", "web-2=healthy"}, rows)

			// An error from the projection rolls the whole append back.
			last, err := s.Log.LastSeq(ctx)
			require.NoError(t, err)
			poisoned := statusReport("web-3", "healthy", "d")
			poisoned.Payload = json.RawMessage(`{"status":"down","poison":true}`)
			_, err = s.Log.Append(ctx, poisoned)
			var applyErr *projection.ApplyError
			require.ErrorAs(t, err, &applyErr)
			require.Equal(t, "host_seen", applyErr.Projection)
			require.ErrorIs(t, err, errPoison)
			after, err := s.Log.LastSeq(ctx)
			require.NoError(t, err)
			require.Equal(t, last, after, "the refused event is absent")
			events, err := s.Log.Query(ctx, eventlog.Filter{HostID: "web-3"})
			require.NoError(t, err)
			require.Empty(t, events)
			rows, err = hostSeenRows(ctx, s.DB)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=degraded", "web-2=healthy"}, rows)

			// Rebuild (what the canonlog command's rebuild runs) re-derives
			// it from the log.
			_, err = s.DB.ExecContext(ctx, `DELETE FROM host_seen`)
			require.NoError(t, err)
			res, err := projection.Rebuild(ctx, s.Log, s.Registry, &projection.RebuildOptions{Names: []string{"host_seen"}})
			require.NoError(t, err)
			require.Len(t, res, 1)
			require.EqualValues(t, 3, res[0].Events)
			require.EqualValues(t, 2, res[0].Rows)
			rows, err = hostSeenRows(ctx, s.DB)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=degraded", "web-2=healthy"}, rows)
			verified, err := projection.Verify(ctx, s.Log, s.Registry, []string{"host_seen"})
			require.NoError(t, err)
			require.True(t, verified[0].Equal, verified[0].Samples)
		})

		t.Run("stale_projection_on_start", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			cfg := app.Config{DatabaseURL: b.URL}

			// Version 1 builds the view.
			a, s := setup(t, cfg, app.AsProjection(hostSeen{version: 1}))
			a.RequireStart()
			_, err := s.Log.AppendBatch(ctx, []eventlog.Entry{statusReport("web-1", "healthy", "a"), statusReport("web-2", "down", "b")})
			require.NoError(t, err)
			a.RequireStop()

			// Version 2 is refused by default, naming the projection.
			err = startErr(t, cfg, app.AsProjection(hostSeen{version: 2}))
			var stale *projection.StaleError
			require.ErrorAs(t, err, &stale)
			require.ErrorIs(t, err, projection.ErrStale)
			require.Len(t, stale.Stale, 1)
			require.Equal(t, "host_seen", stale.Stale[0].Name)
			require.Equal(t, 1, stale.Stale[0].BuiltVersion)
			require.ErrorContains(t, err, "host_seen (version 2, built at version 1)")
			require.ErrorContains(t, err, app.EnvStalePolicy+"=rebuild", "the error says how to get past it")

			// Ignored, it starts and serves the old rows.
			cfg.Stale = projection.StaleIgnore
			a, s = setup(t, cfg, app.AsProjection(hostSeen{version: 2}))
			a.RequireStart()
			rows, err := hostSeenRows(ctx, s.DB)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=healthy", "web-2=down"}, rows)
			a.RequireStop()

			// Rebuilt on start, the view follows version 2 before anything
			// else starts.
			cfg.Stale = projection.StaleRebuild
			var seenAtStart []string
			a, s = setup(t, cfg, app.AsProjection(hostSeen{version: 2}),
				fx.Invoke(func(lc fx.Lifecycle, db *sqlx.DB, _ *eventlog.Log) {
					lc.Append(fx.StartHook(func(ctx context.Context) (err error) {
						seenAtStart, err = hostSeenRows(ctx, db)
						return err
					}))
				}))
			a.RequireStart()
			require.Equal(t, []string{"web-1=v2:healthy", "web-2=v2:down"}, seenAtStart)
			sts, err := projection.ReadStatus(ctx, s.Log, s.Registry)
			require.NoError(t, err)
			for _, st := range sts {
				require.False(t, st.Stale, st.Name)
			}
			a.RequireStop()

			// A projection added to a log that already holds its kinds is
			// never built: refused too.
			err = startErr(t, app.Config{DatabaseURL: b.URL}, app.AsProjection(hostSeen{version: 2}), app.AsProjection(agentEventCount{}))
			require.ErrorAs(t, err, &stale)
			require.ErrorContains(t, err, "agent_event_count (version 1, never built)")
		})

		t.Run("skip_migrate", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			err := startErr(t, app.Config{DatabaseURL: b.URL, SkipMigrate: true})
			require.Error(t, err)
			require.ErrorContains(t, err, "SkipMigrate is set")

			require.NoError(t, startErr(t, app.Config{DatabaseURL: b.URL}))
			require.NoError(t, startErr(t, app.Config{DatabaseURL: b.URL, SkipMigrate: true}), "the schema is there now")
		})

		t.Run("logs_start_up_facts", func(t *testing.T) {
			t.Parallel()
			b := dbtest.New(t, backend)
			var buf testio.SyncBuffer
			logger := slog.New(slog.NewTextHandler(&buf, nil))
			a, _ := setup(t, app.Config{DatabaseURL: b.URL}, fx.Supply(logger), app.AsProjection(hostSeen{version: 3}))
			a.RequireStart()
			a.RequireStop()
			out := buf.String()
			require.Contains(t, out, `msg="canonlog: database" backend=`+map[string]string{"sqlite": "sqlite", "postgres": "postgres"}[backend])
			require.Contains(t, out, `msg="canonlog: migration applied" set=core version=1 source=00001_event_log.sql`)
			require.Contains(t, out, `msg="canonlog: migration applied" set=probe_failures version=1`)
			require.Contains(t, out, `msg="canonlog: projection" name=host_seen version=3 built_version=3`)
			require.Contains(t, out, `msg="canonlog: projection" name=probe_failures version=1 built_version=1`)
			require.NotContains(t, out, "password")
		})
	})
}

// agentEventCount stands for a projection added to a service whose log
// already holds events of its kinds; it derives nothing and has no tables.
type agentEventCount struct{}

func (agentEventCount) Name() string                                          { return "agent_event_count" }
func (agentEventCount) Version() int                                          { return 1 }
func (agentEventCount) Kinds() []eventlog.Kind                                { return []eventlog.Kind{eventlog.KindAgentEvent} }
func (agentEventCount) Apply(context.Context, *sqlx.Tx, eventlog.Event) error { return nil }
func (agentEventCount) Reset(context.Context, *sqlx.Tx) error                 { return nil }

// renamed gives a projection another name.
type renamed struct {
	hostSeen
	name string
}

func (r renamed) Name() string { return r.name }

func TestModuleRefuses(t *testing.T) {
	t.Parallel()
	sqliteURL := func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "canonlog.db") }

	t.Run("duplicate_projection_names", func(t *testing.T) {
		t.Parallel()
		err := startErr(t, app.Config{DatabaseURL: sqliteURL(t)},
			app.AsProjection(hostSeen{}), app.AsProjection(renamed{hostSeen{}, "probe_failures"}))
		require.ErrorIs(t, err, projection.ErrDuplicateName)
		require.ErrorContains(t, err, `"probe_failures" (*probefailures.Projection, app_test.renamed)`)
	})

	t.Run("the_same_projection_twice", func(t *testing.T) {
		t.Parallel()
		err := startErr(t, app.Config{DatabaseURL: sqliteURL(t)}, app.AsProjection(hostSeen{}), app.AsProjection(func() hostSeen { return hostSeen{} }))
		require.ErrorIs(t, err, projection.ErrDuplicateName)
		require.ErrorContains(t, err, `"host_seen"`)
	})

	t.Run("malformed_projection_name", func(t *testing.T) {
		t.Parallel()
		err := startErr(t, app.Config{DatabaseURL: sqliteURL(t)}, app.AsProjection(renamed{hostSeen{}, "Bad-Name"}))
		require.ErrorIs(t, err, projection.ErrInvalidProjection)
	})

	t.Run("invalid_config", func(t *testing.T) {
		t.Parallel()
		err := startErr(t, app.Config{DatabaseURL: sqliteURL(t), Stale: projection.StalePolicy(7)})
		require.ErrorContains(t, err, "Config.Stale")
		err = startErr(t, app.Config{DatabaseURL: sqliteURL(t), MaxPayloadBytes: -1})
		require.ErrorContains(t, err, "Config.MaxPayloadBytes")
		err = startErr(t, app.Config{DatabaseURL: sqliteURL(t), MaxOpenConns: -1})
		require.ErrorContains(t, err, "Config.MaxOpenConns")
		err = startErr(t, app.Config{DatabaseURL: sqliteURL(t), MaxIdleConns: -1})
		require.ErrorContains(t, err, "Config.MaxIdleConns")
		err = startErr(t, app.Config{DatabaseURL: sqliteURL(t), MaxOpenConns: 2, MaxIdleConns: 3})
		require.ErrorContains(t, err, "Config.MaxIdleConns) is 3, more than the pool's 2")
	})

	t.Run("unusable_database_url", func(t *testing.T) {
		t.Parallel()
		err := startErr(t, app.Config{DatabaseURL: "mysql://x"})
		require.ErrorContains(t, err, app.EnvDatabaseURL)
		require.ErrorContains(t, err, "unknown scheme")
	})

	t.Run("password_kept_out_of_errors", func(t *testing.T) {
		t.Parallel()
		err := startErr(t, app.Config{DatabaseURL: "postgres://svc@127.0.0.1:1/db?password=s3cret&sslmode=disable&connect_timeout=2"})
		require.ErrorContains(t, err, "connect to")
		require.NotContains(t, err.Error(), "s3cret")
	})

	t.Run("no_config", func(t *testing.T) {
		t.Parallel()
		err := fx.ValidateApp(fx.NopLogger, app.Module)
		require.ErrorContains(t, err, "app.Config")
	})

	t.Run("as_projection_misuse", func(t *testing.T) {
		t.Parallel()
		for name, ctor := range map[string]any{
			"nil":                      nil,
			"not_a_projection":         42,
			"returns_a_non_projection": func() string { return "x" },
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				require.Error(t, fx.ValidateApp(fx.NopLogger, fx.Supply(app.Config{}), app.Module, app.AsProjection(ctor)))
			})
		}
	})
}

// TestWithTestDB: the database of eventlogtest, already migrated for
// canonlog's core, serves a service's unit tests.
func TestWithTestDB(t *testing.T) {
	t.Parallel()
	db := eventlogtest.NewDB(t)
	a, s := setup(t, app.Config{}, app.WithDB(db), app.AsProjection(hostSeen{}))
	a.RequireStart()
	defer a.RequireStop()
	_, err := s.Log.Append(context.Background(), statusReport("web-1", "up", "e-1"))
	require.NoError(t, err)
	rows, err := hostSeenRows(context.Background(), db)
	require.NoError(t, err)
	require.Equal(t, []string{"web-1=up"}, rows)
}

// TestNewWithoutGraph: New is an ordinary constructor; any fx.Lifecycle
// runs its hooks.
func TestNewWithoutGraph(t *testing.T) {
	t.Parallel()
	lc := fxtest.NewLifecycle(t)
	res, err := app.New(app.Params{
		Lifecycle:   lc,
		Config:      app.Config{DatabaseURL: "sqlite::memory:"},
		Projections: []projection.Projection{hostSeen{}, probefailures.New()},
	})
	require.NoError(t, err)
	lc.RequireStart()
	_, err = res.Log.Append(context.Background(), statusReport("web-1", "up", "e-1"))
	require.NoError(t, err)
	lc.RequireStop()
	requireClosed(t, res.DB)
}

// TestValidateApp checks the graph wiring without running a constructor.
func TestValidateApp(t *testing.T) {
	t.Parallel()
	require.NoError(t, fx.ValidateApp(fx.NopLogger,
		fx.Provide(app.ConfigFromEnv),
		app.Module,
		app.ProbeFailuresModule,
		app.AsProjection(hostSeen{}),
		fx.Supply(&slog.Logger{}),
		app.AsProjection(func(*slog.Logger) (*hostSeenCtor, error) { return &hostSeenCtor{}, nil }),
		fx.Invoke(func(*eventlog.Log, *projection.Registry, *probefailures.Store, *sqlx.DB) {}),
	))
	db := &sqlx.DB{} // never opened: ValidateApp runs no constructor
	require.NoError(t, fx.ValidateApp(fx.NopLogger, fx.Supply(app.Config{}), app.WithDB(db), app.Module))
	require.Error(t, fx.ValidateApp(fx.NopLogger, fx.Supply(app.Config{}), app.WithDB(nil), app.Module))
}

type hostSeenCtor struct{ hostSeen }

func (*hostSeenCtor) Name() string { return "host_seen_ctor" }

// TestModuleGuardsOtherServicesProjections runs two apps on one database:
// one registers agent_event_count, the other does not. The second one's
// appends of agent events are refused unless it allows drift, which marks
// the first one's view stale.
func TestModuleGuardsOtherServicesProjections(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		owner, _ := setup(t, app.Config{DatabaseURL: b.URL}, app.AsProjection(agentEventCount{}))
		owner.RequireStart()
		owner.RequireStop()

		other, s := setup(t, app.Config{DatabaseURL: b.URL})
		var m *projection.Manager
		other2 := fxtest.New(t, fx.Supply(app.Config{DatabaseURL: b.URL, AllowDrift: true}), app.Module, app.ProbeFailuresModule, fx.Populate(&m))
		other.RequireStart()
		_, err := s.Log.Append(ctx, probeResult("web-1", "r-1", "CIS-5.2.1", "web-1/1"))
		var ue *projection.UnregisteredError
		require.ErrorAs(t, err, &ue)
		require.Equal(t, []string{"agent_event_count"}, ue.Names)
		_, err = s.Log.Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: []byte(`{}`)})
		require.NoError(t, err, "kinds no other projection consumes go through")
		other.RequireStop()

		other2.RequireStart()
		_, err = m.Log().Append(ctx, probeResult("web-1", "r-1", "CIS-5.2.1", "web-1/1"))
		require.NoError(t, err)
		sts, err := m.Status(ctx)
		require.NoError(t, err)
		st, ok := sts.Get("agent_event_count")
		require.True(t, ok)
		require.False(t, st.Registered)
		require.Positive(t, st.DriftSeq)
		other2.RequireStop()

		// The owner now refuses to start on its drifted view.
		err = startErr(t, app.Config{DatabaseURL: b.URL}, app.AsProjection(agentEventCount{}))
		require.ErrorIs(t, err, projection.ErrStale)
	})
}
