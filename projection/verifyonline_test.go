package projection_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// pausingView is test_view whose next ApplyBatch, once armed, stops until
// released: it holds a verify in the middle of its derivation.
type pausingView struct {
	testView
	armed            atomic.Bool
	entered, release chan struct{}
}

func (v *pausingView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	if v.armed.CompareAndSwap(true, false) {
		close(v.entered)
		<-v.release
	}
	return v.testView.ApplyBatch(ctx, tx, events)
}

func (v *pausingView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	return v.ApplyBatch(ctx, tx, []eventlog.Event{ev})
}

// TestVerifyOnline: a verify takes no lock that appends wait for (on
// SQLite: it holds no write transaction). While one is held in the middle of its derivation, an append of the
// projection's kinds commits, a follower reads it, and the verify then
// reports the view equal (both sides are read at its snapshot) and leaves
// no temporary table behind in the pool.
func TestVerifyOnline(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) { verifyOnline(t, backend) })
}

func verifyOnline(t *testing.T, backend string) {
	ctx := context.Background()
	v := &pausingView{entered: make(chan struct{}), release: make(chan struct{})}
	log, reg, db := setup(t, backend, v)
	require.NotEqual(t, 1, db.Stats().MaxOpenConnections, "a pool of one takes the blocking path")
	_, err := log.AppendBatch(ctx, []eventlog.Entry{ev("k", "h1", `{}`), ev("k", "h2", `{}`), ev("k", "h3", `{}`)})
	require.NoError(t, err)
	head, err := log.PositionAtHead(ctx)
	require.NoError(t, err)

	v.armed.Store(true)
	var released bool
	release := func() {
		if !released {
			released = true
			close(v.release)
		}
	}
	defer release()
	verified := make(chan error, 1)
	var res projection.VerifyResults
	go func() {
		var err error
		res, err = projection.Verify(ctx, log, reg, nil)
		verified <- err
	}()
	<-v.entered

	appendCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := log.Append(appendCtx, ev("k", "h4", `{}`))
	require.NoError(t, err, "an append waited for verify")
	fol, err := log.NewFollower(head, &eventlog.FollowOptions{PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	var got []int64
	for ev, err := range fol.Events(appendCtx) {
		require.NoError(t, err)
		got = append(got, ev.Seq)
		break
	}
	require.Equal(t, []int64{r.Event.Seq}, got, "a follower was held back by verify")

	release()
	require.NoError(t, <-verified)
	require.True(t, res[0].Equal, "%+v", res[0])
	require.Equal(t, int64(3), res[0].Events, "the derivation replays the log at its snapshot")

	// The pool holds no connection with a temporary test_view that would
	// hide the live one.
	db.SetMaxIdleConns(dbtest.MaxConns)
	for range dbtest.MaxConns {
		var n int
		require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM test_view`))
		require.Equal(t, 4, n)
	}
	res, err = projection.Verify(ctx, log, reg, nil)
	require.NoError(t, err)
	require.NoError(t, res.Err())
	require.Equal(t, int64(4), res[0].Events)
}

// TestVerifyOnAPoolOfOne: the snapshot and the derivation would each need
// a connection; on a pool of one, verify takes the blocking path instead
// of waiting for itself.
func TestVerifyOnAPoolOfOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log, reg, db := setup(t, "postgres", &testView{})
	_, err := log.AppendBatch(ctx, []eventlog.Entry{ev("k", "h1", `{}`), ev("k", "h2", `{}`)})
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := projection.Verify(ctx, log, reg, nil)
	require.NoError(t, err)
	require.NoError(t, res.Err())
	require.Equal(t, int64(2), res[0].Events)
}

// TestVerifyAfterIdleConnectionsDied: connections the server ended while
// they sat idle in the pool show only when used; verify takes live ones
// instead of failing with a bad connection.
func TestVerifyAfterIdleConnectionsDied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	tag := b.Schema + "_idle"
	db, err := eventlog.OpenDB(ctx, b.SessionURL(tag))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxIdleConns(dbtest.MaxConns)
	db.SetMaxOpenConns(dbtest.MaxConns)
	reg := projection.Must(projection.NewRegistry(&testView{}))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	require.NoError(t, err)
	_, err = projection.Migrate(ctx, log, reg)
	require.NoError(t, err)
	_, err = log.AppendBatch(ctx, []eventlog.Entry{ev("k", "h1", `{}`), ev("k", "h2", `{}`)})
	require.NoError(t, err)

	// Four idle connections in the pool, then the server ends every one.
	conns := make([]*sqlx.Conn, 4)
	for i := range conns {
		conns[i], err = db.Connx(ctx)
		require.NoError(t, err)
		_, err = conns[i].ExecContext(ctx, `SELECT 1`)
		require.NoError(t, err)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	var ended []bool
	require.NoError(t, dbtest.Admin(t).Select(&ended, `SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity WHERE application_name = $1`, tag))
	require.GreaterOrEqual(t, len(ended), len(conns))

	res, err := projection.Verify(ctx, log, reg, nil)
	require.NoError(t, err)
	require.NoError(t, res.Err())
	require.Equal(t, int64(2), res[0].Events)
}
