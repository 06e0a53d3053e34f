package eventlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// wakeTimeout bounds the wait for a wake-up that must come. Wake-ups
// come within milliseconds; the bound only keeps a broken test from
// hanging.
const wakeTimeout = 30 * time.Second

// quietFor is how long a test watches for a wake-up that must not come.
const quietFor = 200 * time.Millisecond

func requireWoken(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(wakeTimeout):
		t.Fatalf("no wake-up after %s within %s", what, wakeTimeout)
	}
}

func requireQuiet(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
		t.Fatalf("woken by %s", what)
	case <-time.After(quietFor):
	}
}

// uniqueKind is a kind no other test appends: notifications are
// database-wide, and other tests' must not pass for this one's.
func uniqueKind(prefix string) eventlog.Kind {
	return eventlog.Kind(fmt.Sprintf("%s_%08x", prefix, rand.Uint32()))
}

func entryOf(kind eventlog.Kind, id string) eventlog.Entry {
	return eventlog.Entry{Kind: kind, Payload: json.RawMessage(`{}`), EventID: id}
}

// A log wakes its own subscribers of the kinds it stored: not for other
// kinds, not for duplicates, and for AppendTx's only once WakeFollowers
// says the transaction committed.
func TestWakeupsInProcess(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Migrated(t)
		log, err := eventlog.New(db, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })
		mine, other := uniqueKind("wake_mine"), uniqueKind("wake_other")
		c, stop := log.Wakeups(mine)
		defer stop()
		all, stopAll := log.Wakeups()
		defer stopAll()

		_, err = log.Append(ctx, entryOf(other, "o1"))
		require.NoError(t, err)
		requireQuiet(t, c, "another kind's append")
		requireWoken(t, all, "an append, for a subscriber of every kind")

		_, err = log.AppendBatch(ctx, []eventlog.Entry{entryOf(other, "o2"), entryOf(mine, "m1")})
		require.NoError(t, err)
		requireWoken(t, c, "a batch holding its kind")

		_, err = log.Append(ctx, entryOf(mine, "m1"))
		require.NoError(t, err)
		requireQuiet(t, c, "a duplicate")

		_, err = log.Append(ctx, eventlog.Entry{Kind: mine, Payload: json.RawMessage(`not json`)})
		require.Error(t, err)
		requireQuiet(t, c, "a refused append")

		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		_, err = log.AppendTx(ctx, tx, entryOf(mine, "m2"))
		require.NoError(t, err)
		requireQuiet(t, c, "AppendTx before its commit")
		require.NoError(t, tx.Commit())
		log.WakeFollowers(mine)
		requireWoken(t, c, "WakeFollowers")

		// Wake-ups merge: many appends leave one value in the channel.
		for i := range 5 {
			_, err = log.Append(ctx, entryOf(mine, fmt.Sprintf("m%d", 10+i)))
			require.NoError(t, err)
		}
		requireWoken(t, c, "five appends")
		requireQuiet(t, c, "the five appends again")

		stop()
		stop() // twice is fine
		_, err = log.Append(ctx, entryOf(mine, "m20"))
		require.NoError(t, err)
		requireWoken(t, all, "an append after another subscription ended")
	})
}

// On PostgreSQL a log with Notify wakes the subscribers of another
// process's log that listens (ListenURL), by kind, and keeps doing so
// after the listening connection was killed and came back.
func TestWakeupsAcrossProcesses(t *testing.T) {
	t.Parallel()
	b := dbtest.New(t, "postgres")
	ctx := context.Background()
	writerDB := b.Migrated(t)
	writer, err := eventlog.New(writerDB, &eventlog.Config{Notify: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = writer.Close() })
	silent, err := eventlog.New(writerDB, nil) // Notify off
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() })

	tag := "canonlog_wake_" + fmt.Sprintf("%08x", rand.Uint32())
	readerDB := b.Open(t)
	reader, err := eventlog.New(readerDB, &eventlog.Config{ListenURL: b.SessionURL(tag)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = reader.Close() })

	mine, other := uniqueKind("wake_mine"), uniqueKind("wake_other")
	c, stop := reader.Wakeups(mine)
	defer stop()
	listening := func() int {
		var n int
		require.NoError(t, readerDB.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, tag))
		return n
	}
	require.Equal(t, 1, listening(), "one listening connection")
	c2, stop2 := reader.Wakeups()
	require.Equal(t, 1, listening(), "shared by the subscriptions")
	stop2()
	_ = c2

	_, err = silent.Append(ctx, entryOf(mine, "s1"))
	require.NoError(t, err)
	requireQuiet(t, c, "a log without Notify")

	_, err = writer.Append(ctx, entryOf(other, "o1"))
	require.NoError(t, err)
	requireQuiet(t, c, "another kind's notification")

	_, err = writer.Append(ctx, entryOf(mine, "m1"))
	require.NoError(t, err)
	requireWoken(t, c, "a notification of its kind")

	// The listening connection dies: the listener reconnects by itself,
	// and says so with a wake-up, as notifications may have been missed.
	_, err = readerDB.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, tag)
	require.NoError(t, err)
	requireWoken(t, c, "the listener's reconnection")
	require.Eventually(t, func() bool { return listening() == 1 }, wakeTimeout, 10*time.Millisecond)
	_, err = writer.Append(ctx, entryOf(mine, "m2"))
	require.NoError(t, err)
	requireWoken(t, c, "a notification after the reconnection")

	// The last subscription's end closes the listening connection.
	stop()
	b.WaitSessionsGone(t, tag)
}

// A bad ListenURL is refused by New.
func TestWakeupsConfig(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t, "sqlite").Open(t)
	_, err := eventlog.New(db, &eventlog.Config{ListenURL: "postgres://127.0.0.1/x"})
	require.ErrorContains(t, err, "ListenURL is for a log on PostgreSQL")
	_, err = eventlog.New(db, &eventlog.Config{ListenURL: "mysql://x"})
	require.ErrorContains(t, err, "unknown scheme")
	// Notify on SQLite sends nothing, and is not an error.
	l, err := eventlog.New(db, &eventlog.Config{Notify: true})
	require.NoError(t, err)
	require.NoError(t, l.Close())
}
