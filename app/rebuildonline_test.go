package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
	"github.com/canonlog/canonlog/projection"
)

// gatedHostSeen is hostSeen at version 2 whose batches — what a rebuild
// applies — wait for gate, so that a test holds a rebuild in its build
// phase. Single appends (Apply) do not wait.
type gatedHostSeen struct {
	hostSeen
	gate    chan struct{}
	entered chan struct{}
	once    *sync.Once
}

func newGatedHostSeen() gatedHostSeen {
	return gatedHostSeen{hostSeen: hostSeen{version: 2}, gate: make(chan struct{}), entered: make(chan struct{}), once: &sync.Once{}}
}

func (g gatedHostSeen) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	g.once.Do(func() { close(g.entered) })
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.hostSeen.ApplyBatch(ctx, tx, events)
}

func hostSeenStatus(t *testing.T, ctx context.Context, m *projection.Manager) projection.Status {
	t.Helper()
	sts, err := m.Status(ctx)
	require.NoError(t, err)
	st, ok := sts.Get("host_seen")
	require.True(t, ok)
	return st
}

// With StaleRebuildOnline a service whose projection is stale starts at
// once and serves the view as it is — rows derived by the old version,
// and the new version's rows for what is appended meanwhile — until the
// background rebuild swaps the new view in. Stopping the service stops
// the rebuild and leaves the view and its checkpoint as they were.
func TestStaleRebuildOnline(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		cfg := app.Config{DatabaseURL: b.URL}

		a, s := setup(t, cfg, app.AsProjection(hostSeen{}))
		a.RequireStart()
		for _, e := range []eventlog.Entry{
			{Kind: eventlog.KindAgentEvent, HostID: "web-1", Payload: []byte(`{"status":"healthy"}`)},
			{Kind: eventlog.KindAgentEvent, HostID: "web-2", Payload: []byte(`{"status":"down"}`)},
		} {
			_, err := s.Log.Append(ctx, e)
			require.NoError(t, err)
		}
		a.RequireStop()

		t.Run("stop_mid_rebuild", func(t *testing.T) {
			cfg := cfg
			cfg.Stale = projection.StaleRebuildOnline
			view := newGatedHostSeen()
			var m *projection.Manager
			a, _ := setup(t, cfg, app.AsProjection(view), fx.Populate(&m))
			a.RequireStart()
			<-view.entered
			before := hostSeenStatus(t, ctx, m)
			require.True(t, before.Stale)
			a.RequireStop()

			db := b.Open(t)
			rows, err := hostSeenRows(ctx, db)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=healthy", "web-2=down"}, rows, "the stopped rebuild swapped nothing in")
			requireNoRebuildSchemas(t, db, backend)
		})

		t.Run("swaps_in_while_serving", func(t *testing.T) {
			cfg := cfg
			cfg.Stale = projection.StaleRebuildOnline
			var buf testio.SyncBuffer
			view := newGatedHostSeen()
			var m *projection.Manager
			a, s := setup(t, cfg, app.AsProjection(view), fx.Populate(&m), fx.Supply(slog.New(slog.NewTextHandler(&buf, nil))))
			a.RequireStart() // returns while the rebuild waits in its build phase
			<-view.entered
			require.True(t, hostSeenStatus(t, ctx, m).Stale)
			require.Contains(t, buf.String(), "served as it is until its online rebuild swaps the new view in")

			// Served meanwhile: the old rows, and the new version's rows
			// for what is appended now.
			_, err := s.Log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "web-3", Payload: []byte(`{"status":"up"}`)})
			require.NoError(t, err)
			rows, err := hostSeenRows(ctx, s.DB)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=healthy", "web-2=down", "web-3=v2:up"}, rows)

			close(view.gate)
			waitBackgroundRebuild(t, ctx, m, &buf)
			rows, err = hostSeenRows(ctx, s.DB)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=v2:healthy", "web-2=v2:down", "web-3=v2:up"}, rows)
			res, err := m.Verify(ctx, []string{"host_seen"})
			require.NoError(t, err)
			require.NoError(t, res.Err())
			a.RequireStop()
			require.Contains(t, buf.String(), `msg="canonlog: projection rebuilt in the background" name=host_seen version=2`)
			require.Contains(t, buf.String(), "online=true")
			// By default the background rebuild is gentle: the service
			// is serving meanwhile.
			require.Contains(t, buf.String(), "gentle=true")
		})

		t.Run("fast", func(t *testing.T) {
			cfg := cfg
			cfg.Stale = projection.StaleRebuildOnline
			cfg.StaleRebuildFast = true
			var buf testio.SyncBuffer
			var m *projection.Manager
			a, s := setup(t, cfg, app.AsProjection(hostSeen{version: 3}), fx.Populate(&m), fx.Supply(slog.New(slog.NewTextHandler(&buf, nil))))
			a.RequireStart()
			waitBackgroundRebuild(t, ctx, m, &buf)
			rows, err := hostSeenRows(ctx, s.DB)
			require.NoError(t, err)
			require.Equal(t, []string{"web-1=v2:healthy", "web-2=v2:down", "web-3=v2:up"}, rows)
			a.RequireStop()
			require.Contains(t, buf.String(), `msg="canonlog: projection rebuilt in the background" name=host_seen version=3`)
			require.Contains(t, buf.String(), "online=true")
			// SQLite's online rebuild never reads ahead, whatever the
			// setting.
			require.Contains(t, buf.String(), fmt.Sprintf("gentle=%v", backend == "sqlite"))
		})
	})
}

// waitBackgroundRebuild waits for host_seen to be fresh and for the
// background rebuild to say it is done. The view is fresh once the swap
// commits; the background rebuild returns (and says so) a moment later,
// after its cleanup: stopping the service before that cancels it.
func waitBackgroundRebuild(t *testing.T, ctx context.Context, m *projection.Manager, log *testio.SyncBuffer) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for hostSeenStatus(t, ctx, m).Stale || !strings.Contains(log.String(), "projection rebuilt in the background") {
		require.True(t, time.Now().Before(deadline), "the background rebuild did not finish within a minute")
		time.Sleep(10 * time.Millisecond)
	}
}

// requireNoRebuildSchemas fails when an online rebuild's shadow or retired
// schema is left in the test's schema (PostgreSQL).
func requireNoRebuildSchemas(t *testing.T, db *sqlx.DB, backend string) {
	t.Helper()
	if backend != "postgres" {
		return
	}
	var left []string
	require.NoError(t, db.Select(&left, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, current_schema() || '__')`))
	require.Empty(t, left)
}
