package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
	"github.com/canonlog/canonlog/projection"
)

// asyncHostSeen is hostSeen maintained by a consumer after commit.
type asyncHostSeen struct{ hostSeen }

func (asyncHostSeen) Asynchronous() bool { return true }

// The module runs the consumer of an asynchronous projection from start
// to stop: appends leave the view alone, the consumer derives it, and a
// rebuild while the app runs repositions the consumer, which the module
// takes over again. A consumer registered under its name is refused.
func TestAsyncProjectionInApp(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		var buf testio.SyncBuffer
		var (
			log *eventlog.Log
			m   *projection.Manager
		)
		a := fxtest.New(t,
			fx.Supply(app.Config{DatabaseURL: b.URL}),
			fx.Supply(slog.New(slog.NewTextHandler(&buf, nil))),
			app.Module,
			app.AsProjection(asyncHostSeen{}),
			fx.Populate(&log, &m),
		)
		a.RequireStart()
		db := b.Open(t)
		rows := func() int {
			var n int
			require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM host_seen`))
			return n
		}
		appendHosts := func(from, n int) {
			var entries []eventlog.Entry
			for i := range n {
				entries = append(entries, statusReport(fmt.Sprint("h", from+i), "ok", ""))
			}
			_, err := log.AppendBatch(ctx, entries)
			require.NoError(t, err)
		}
		appendHosts(0, 10)
		eventually(t, "the consumer to derive the view", func() bool { return rows() == 10 })

		_, err := m.Rebuild(ctx, nil)
		require.NoError(t, err)
		appendHosts(10, 5)
		eventually(t, "the consumer to go on after the rebuild", func() bool { return rows() == 15 })
		res, err := m.Verify(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, res.Err())
		a.RequireStop()
		require.Contains(t, buf.String(), "canonlog: consumer started\" consumer=host_seen")
		require.NotContains(t, buf.String(), "level=ERROR")

		// A consumer of the same name is refused at start.
		clash := fx.New(
			fx.NopLogger,
			fx.Supply(app.Config{DatabaseURL: b.URL}),
			app.Module,
			app.AsProjection(asyncHostSeen{}),
			app.AsConsumer(consumer.Config{Name: "host_seen", HandleTx: func(context.Context, *sqlx.Tx, []eventlog.Event) error { return nil }}),
		)
		err = clash.Start(ctx)
		require.ErrorIs(t, err, consumer.ErrInvalidConfig)
		require.ErrorContains(t, err, "also an asynchronous projection's")
	})
}
