package eventlog_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
)

var t0 = time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)

// setup returns a log on a fresh migrated database of the backend, with a
// fake clock at t0 unless cfg has a clock.
func setup(t *testing.T, backend string, cfg *eventlog.Config) (*eventlog.Log, *sqlx.DB) {
	t.Helper()
	db := dbtest.New(t, backend).Migrated(t)
	if cfg == nil {
		cfg = &eventlog.Config{}
	}
	if cfg.Clock == nil {
		cfg.Clock = eventlogtest.NewFakeClock(t0)
	}
	log, err := eventlog.New(db, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	return log, db
}

func entry(host string, payload string) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host, RolloutID: "r1", Payload: json.RawMessage(payload)}
}

func countEvents(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM event_log`))
	return n
}

func TestAppend(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil)

		res, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindPlanAction, HostID: "h1", RolloutID: "r1",
			Payload: json.RawMessage(`{"a":1}`), EventID: "e1"})
		require.NoError(t, err)
		require.False(t, res.Duplicate)
		require.Positive(t, res.Event.Seq)
		require.Equal(t, t0, res.Event.TS)

		got, err := log.Get(ctx, res.Event.Seq)
		require.NoError(t, err)
		require.Equal(t, res.Event, got)

		last, err := log.LastSeq(ctx)
		require.NoError(t, err)
		require.Equal(t, res.Event.Seq, last)

		_, err = log.Get(ctx, res.Event.Seq+1000)
		require.ErrorIs(t, err, eventlog.ErrNotFound)

		// Empty host and rollout are NULL in SQL and "" again in Go.
		res2, err := log.Append(ctx, eventlog.Entry{Kind: "custom_kind_2", Payload: json.RawMessage(`[]`)})
		require.NoError(t, err)
		got, err = log.Get(ctx, res2.Event.Seq)
		require.NoError(t, err)
		require.Equal(t, "", got.HostID)
		require.Equal(t, "", got.RolloutID)
		require.Equal(t, "", got.EventID)
		var nulls int
		require.NoError(t, log.DB().Get(&nulls, log.DB().Rebind(
			`SELECT COUNT(*) FROM event_log WHERE seq = ? AND host_id IS NULL AND rollout_id IS NULL AND event_id IS NULL`), res2.Event.Seq))
		require.Equal(t, 1, nulls)
	})
}

func TestAppendBatch(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		t.Run("SeqsFollowEntryOrder", func(t *testing.T) {
			log, _ := setup(t, backend, nil)
			var entries []eventlog.Entry
			for i := range 50 {
				e := entry("h", `{"i":`+strconv.Itoa(i)+`}`)
				if i%3 == 0 {
					e.EventID = "ev-" + strconv.Itoa(i)
				}
				entries = append(entries, e)
			}
			res, err := log.AppendBatch(ctx, entries)
			require.NoError(t, err)
			require.Len(t, res, 50)
			for i := range res {
				require.False(t, res[i].Duplicate)
				require.Equal(t, entries[i].Payload, res[i].Event.Payload)
				if i > 0 {
					require.Greater(t, res[i].Event.Seq, res[i-1].Event.Seq)
				}
			}
		})

		t.Run("InvalidEntryInTheMiddleWritesNothing", func(t *testing.T) {
			log, db := setup(t, backend, nil)
			_, err := log.Append(ctx, entry("h", `{}`))
			require.NoError(t, err)
			entries := []eventlog.Entry{entry("h", `{"ok":1}`), entry("h", `{"ok":2}`), entry("h", `not-json{`), entry("h", `{"ok":3}`)}
			_, err = log.AppendBatch(ctx, entries)
			require.ErrorIs(t, err, eventlog.ErrInvalidPayload)
			var ee *eventlog.EntryError
			require.ErrorAs(t, err, &ee)
			require.Equal(t, 2, ee.Index)
			require.Equal(t, "payload", ee.Field)
			require.Equal(t, 1, countEvents(t, db))
		})

		t.Run("DatabaseErrorMidBatchWritesNothing", func(t *testing.T) {
			// A conflict found only by the database (after earlier entries
			// were inserted) must roll the earlier ones back too.
			log, db := setup(t, backend, nil)
			_, err := log.Append(ctx, eventlog.Entry{Kind: "k", Payload: json.RawMessage(`{"v":1}`), EventID: "taken"})
			require.NoError(t, err)
			_, err = log.AppendBatch(ctx, []eventlog.Entry{
				entry("h", `{"new":1}`),
				{Kind: "k", Payload: json.RawMessage(`{"v":2}`), EventID: "taken"},
				entry("h", `{"new":2}`),
			})
			require.ErrorIs(t, err, eventlog.ErrEventIDConflict)
			require.Equal(t, 1, countEvents(t, db))
		})

		t.Run("Empty", func(t *testing.T) {
			log, db := setup(t, backend, nil)
			res, err := log.AppendBatch(ctx, nil)
			require.NoError(t, err)
			require.Empty(t, res)
			require.Equal(t, 0, countEvents(t, db))
		})
	})
}

func TestAppendTx(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)

		// Rolled back with the caller's transaction.
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		res, err := log.AppendTx(ctx, tx, entry("h", `{"n":1}`), entry("h", `{"n":2}`))
		require.NoError(t, err)
		require.Len(t, res, 2)
		require.NoError(t, tx.Rollback())
		require.Equal(t, 0, countEvents(t, db))

		// Committed with it.
		tx, err = db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		res, err = log.AppendTx(ctx, tx, entry("h", `{"n":3}`))
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		got, err := log.Get(ctx, res[0].Event.Seq)
		require.NoError(t, err)
		require.JSONEq(t, `{"n":3}`, string(got.Payload))
	})
}
