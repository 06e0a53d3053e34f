package projection_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// asyncView is kindView maintained by a consumer after commit.
type asyncView struct{ kindView }

func (v *asyncView) Asynchronous() bool { return true }

var _ projection.Asynchronous = (*asyncView)(nil)

// runningAsync runs the projection's consumer until the returned stop is
// called; stop returns RunAsync's error.
func runningAsync(t *testing.T, log *eventlog.Log, reg *projection.Registry) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := &consumer.Config{PollInterval: 20 * time.Millisecond, MinBackoff: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() { done <- projection.RunAsync(ctx, log, reg, "test_view", cfg) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func agentSeqsOf(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	var rows []string
	require.NoError(t, db.Select(&rows, `SELECT CAST(seq AS TEXT) || ':agent_event:' || COALESCE(host_id, '') FROM event_log WHERE kind = 'agent_event' ORDER BY seq`))
	return rows
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An asynchronous projection is not applied by appends; its consumer
// maintains it; Verify compares it at the consumer's position, Rebuild
// re-derives it and repositions the consumer (deposing a running one,
// which RunAsync takes over again), with appends going on throughout.
func TestAsyncProjection(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		view := &asyncView{kindView{testView: testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}}
		log, reg, db := setup(t, backend, view)
		appendSome := func(n int) {
			var batch []eventlog.Entry
			for i := range n {
				batch = append(batch, ev(eventlog.KindAgentEvent, fmt.Sprintf("h%d", i%5), `{}`), ev(eventlog.KindEffect, "", `{}`))
			}
			_, err := log.AppendBatch(ctx, batch)
			require.NoError(t, err)
		}
		appendSome(30)
		require.Zero(t, count(t, db, "test_view"), "appends do not apply it")
		require.Zero(t, view.applied.Load())
		sts, err := projection.ReadStatus(ctx, log, reg)
		require.NoError(t, err)
		require.True(t, sts[0].Async)
		require.False(t, reg.Consumes(eventlog.KindAgentEvent), "appends of its kinds take no lock and apply nothing")

		verify := func() projection.VerifyResult {
			t.Helper()
			res, err := projection.Verify(ctx, log, reg, nil)
			require.NoError(t, err)
			return res[0]
		}
		caughtUp := func() bool { return fmt.Sprint(viewRows(t, db)) == fmt.Sprint(agentSeqsOf(t, db)) }

		stop := runningAsync(t, log, reg)
		waitFor(t, "the consumer to derive the view", caughtUp)
		require.True(t, verify().Equal)

		// Verify compares at the consumer's position: events it has not
		// handled yet are not missing.
		require.NoError(t, stop())
		appendSome(10)
		res := verify()
		require.True(t, res.Equal, "%+v", res)
		require.EqualValues(t, 30, res.Events)

		// A row lost from the view is found.
		_, err = db.Exec(`DELETE FROM test_view WHERE event_log_seq = (SELECT MIN(event_log_seq) FROM test_view)`)
		require.NoError(t, err)
		res = verify()
		require.False(t, res.Equal)
		require.EqualValues(t, 1, res.Missing)

		// Rebuild: the log up to the followers' horizon (on PostgreSQL
		// other tests' transactions may hold it back), and the consumer
		// resumes after it.
		rb, err := projection.Rebuild(ctx, log, reg, nil)
		require.NoError(t, err)
		require.EqualValues(t, count(t, db, "test_view"), rb[0].Events)
		require.LessOrEqual(t, rb[0].Events, int64(40))
		if backend == "sqlite" {
			require.True(t, caughtUp(), "one writer: the horizon is the head")
		}
		require.True(t, verify().Equal)
		appendSome(5)
		stop = runningAsync(t, log, reg)
		waitFor(t, "the consumer to resume after the rebuild", caughtUp)

		// A rebuild while the consumer runs and appends go on.
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 10 {
				appendSome(3)
			}
		})
		_, err = projection.Rebuild(ctx, log, reg, nil)
		require.NoError(t, err)
		wg.Wait()
		waitFor(t, "the consumer to catch up after a rebuild under load", caughtUp)
		require.NoError(t, stop(), "deposed by the rebuild, and taken over again")
		require.True(t, verify().Equal)
		sts, err = projection.ReadStatus(ctx, log, reg)
		require.NoError(t, err)
		require.False(t, sts[0].Stale)
	})
}

// AsyncConsumer refuses a projection that is not asynchronous, an
// unknown one, and options that the projection sets.
func TestAsyncConsumerRefuses(t *testing.T) {
	t.Parallel()
	log, reg, _ := setup(t, "sqlite", &testView{})
	_, err := projection.AsyncConsumer(log, reg, "test_view", nil)
	require.ErrorIs(t, err, projection.ErrNotAsync)
	_, err = projection.AsyncConsumer(log, reg, "nope", nil)
	require.ErrorIs(t, err, projection.ErrUnknownProjection)
	log2, reg2, _ := setup(t, "sqlite", &asyncView{kindView{testView: testView{kinds: []eventlog.Kind{eventlog.KindEffect}}}})
	_, err = projection.AsyncConsumer(log2, reg2, "test_view", &consumer.Config{Name: "x"})
	require.ErrorIs(t, err, consumer.ErrInvalidConfig)
}
