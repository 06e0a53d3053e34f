package eventlog_test

import (
	"context"
	"database/sql"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// readAll reads every page of log.Pages with opts.
func readAll(t *testing.T, log *eventlog.Log, opts *eventlog.ReadOptions) []eventlog.Event {
	t.Helper()
	var out []eventlog.Event
	for page, err := range log.Pages(context.Background(), 0, opts) {
		require.NoError(t, err)
		out = append(out, page...)
	}
	return out
}

// ReadOptions.Before reads the log as of a start position, page after
// page, without a transaction: exactly the events committed when it was
// taken — not one appended before it and committed after it, whatever its
// seq — and a Follower from the same position delivers exactly the rest.
func TestReadBeforePosition(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		s := newStartScenario(t, backend, 2)
		pos, err := s.log.PositionAtHead(ctx)
		require.NoError(t, err)
		late := s.finish(t)

		before := readAll(t, s.log, &eventlog.ReadOptions{Before: &pos, PageSize: 2})
		require.Equal(t, seqsOf(s.before), seqsOf(before), "the events committed before the position, in seq order")

		f, err := s.log.NewFollower(pos, nil)
		require.NoError(t, err)
		after := followUntil(t, f, late.Seq)
		want := append(seqsOf(s.held), late.Seq)
		require.ElementsMatch(t, want, seqsOf(after))

		all := readAll(t, s.log, nil)
		got := append(seqsOf(before), seqsOf(after)...)
		slices.Sort(got)
		require.Equal(t, seqsOf(all), got, "together, every event once")

		// A kind filter applies as well.
		agent := readAll(t, s.log, &eventlog.ReadOptions{Before: &pos, Kinds: []eventlog.Kind{eventlog.KindAgentEvent}})
		require.Equal(t, seqsOf(s.before), seqsOf(agent))
		require.Empty(t, readAll(t, s.log, &eventlog.ReadOptions{Before: &pos, Kinds: []eventlog.Kind{eventlog.KindPlanAction}}))
	})
}

func TestReadBeforePositionRefused(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		log, _ := setup(t, backend, nil)
		_, err := log.Append(context.Background(), entry("k", `{}`))
		require.NoError(t, err)
		bad := []eventlog.Position{{Seq: -1}, {AfterSeq: -2}}
		if backend == "postgres" {
			bad = append(bad, eventlog.Position{TxID: 5, AfterSeq: 1, Snapshot: "not a snapshot"})
		} else {
			bad = append(bad, eventlog.Position{AfterSeq: 1, Snapshot: "10:20:"})
		}
		for _, pos := range bad {
			var n int
			for _, err := range log.Pages(context.Background(), 0, &eventlog.ReadOptions{Before: &pos}) {
				require.ErrorIs(t, err, eventlog.ErrInvalidFilter, "%s", pos)
				n++
			}
			require.Equal(t, 1, n, "one error and nothing else for %s", pos)
		}
	})
}

// PollTx reads the next page inside the caller's transaction, as Poll
// does outside one, and moves the cursor.
func TestFollowPollTx(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PageSize: 2})
		require.NoError(t, err)
		var want []int64
		for range 3 {
			r, err := log.Append(ctx, entry("k", `{}`))
			require.NoError(t, err)
			want = append(want, r.Event.Seq)
		}
		var got []int64
		for len(got) < len(want) {
			tx, err := db.BeginTxx(ctx, nil)
			require.NoError(t, err)
			evs, err := f.PollTx(ctx, tx)
			require.NoError(t, err)
			require.LessOrEqual(t, len(evs), 2)
			require.NoError(t, tx.Commit())
			got = append(got, seqsOf(evs)...)
		}
		require.Equal(t, want, got)
		evs, err := f.Poll(ctx)
		require.NoError(t, err)
		require.Empty(t, evs, "the cursor moved past what PollTx returned")
	})
}

// DrainTx reads every event the transaction sees after the cursor, past
// the horizon that holds Poll back: on PostgreSQL an open transaction
// keeps Poll from reading what committed after it began, and DrainTx
// reads it anyway (the caller vouches that nothing it wants is still
// being appended).
func TestFollowDrainTx(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		_, err := log.Append(ctx, entry("k", `{"first":true}`))
		require.NoError(t, err)
		pos, err := log.PositionAtHead(ctx)
		require.NoError(t, err)
		f, err := log.NewFollower(pos, &eventlog.FollowOptions{PageSize: 2, Filter: eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindAgentEvent}}})
		require.NoError(t, err)

		var held *sql.Tx
		if backend == "postgres" {
			// Holds the horizon: it has a transaction id and stays open.
			held, err = db.DB.BeginTx(ctx, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = held.Rollback() })
			_, err = held.ExecContext(ctx, `SELECT pg_current_xact_id()`)
			require.NoError(t, err)
		}
		var want []int64
		for range 5 {
			r, err := log.Append(ctx, entry("k", `{}`))
			require.NoError(t, err)
			want = append(want, r.Event.Seq)
			_, err = log.Append(ctx, eventlog.Entry{Kind: eventlog.KindPlanAction, Payload: []byte(`{}`)})
			require.NoError(t, err)
		}
		if held != nil {
			evs, err := f.Poll(ctx)
			require.NoError(t, err)
			require.Empty(t, evs, "the open transaction holds Poll back")
		}

		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		var got []int64
		pages := 0
		for page, err := range f.DrainTx(ctx, tx) {
			require.NoError(t, err)
			require.LessOrEqual(t, len(page), 2)
			got = append(got, seqsOf(page)...)
			pages++
		}
		require.Equal(t, want, got)
		require.GreaterOrEqual(t, pages, 3)
		require.GreaterOrEqual(t, f.Position().Seq, want[4], "the cursor is past the last event drained (or past the window that held it)")
		for _, err := range f.DrainTx(ctx, tx) {
			require.NoError(t, err)
			t.Fatal("a second drain found more")
		}
	})
}

// A follower filtered by kind or host walks the (tx_id, seq) index even
// on a table that was never analyzed (after a bulk load or a restore,
// with autovacuum behind): planned onto the kind index, or a sequential
// scan, each page would read and sort every matching event after the
// cursor.
func TestExplainFollowFilteredWithoutStatistics(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	fillLog(t, db, 20_000, false)

	rec := &recorder{}
	log, err := eventlog.New(recordingDB(t, b.URL, rec), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	for _, filter := range []eventlog.Filter{
		{Kinds: []eventlog.Kind{eventlog.KindGateDecision}},
		{Kinds: []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindPlanAction}},
		{HostID: "h1"},
	} {
		f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PageSize: 100, Filter: filter})
		require.NoError(t, err)
		rec.reset()
		_, err = f.Poll(context.Background())
		require.NoError(t, err)
		rec.mu.Lock()
		queries := rec.queries
		rec.mu.Unlock()
		require.Len(t, queries, 2, "a horizon read and a page read: %+v", queries)
		plan := explain(t, db, queries[1].sql, queries[1].args)
		require.Empty(t, plan.find("Sort", "Seq Scan", "Bitmap Heap Scan"), "%+v: %s", filter, plan)
		scans := plan.find("Index Scan")
		require.Len(t, scans, 1, "%s", plan)
		require.Equal(t, "event_log_tx_id_seq_idx", scans[0].IndexName, "%+v: %s", filter, plan)
	}
}

// A follower of a rare kind moves through the log a window at a time:
// Poll may return nothing while more is readable, and CaughtUp tells.
func TestFollowRareKind(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil)
		var want []int64
		for i := range 30 {
			e := entry("h", `{}`)
			if i%10 == 9 {
				e.Kind = eventlog.KindGateDecision
			}
			r, err := log.Append(ctx, e)
			require.NoError(t, err)
			if i%10 == 9 {
				want = append(want, r.Event.Seq)
			}
		}
		f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{PageSize: 4, Filter: eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindGateDecision}}})
		require.NoError(t, err)
		var got []int64
		for polls := 0; ; polls++ {
			require.Less(t, polls, 1000, "the follower never caught up")
			evs, err := f.Poll(ctx)
			require.NoError(t, err)
			got = append(got, seqsOf(evs)...)
			if f.CaughtUp() && len(got) == len(want) {
				break
			}
			if f.CaughtUp() {
				time.Sleep(5 * time.Millisecond) // another test's transaction holds the horizon
			}
		}
		require.Equal(t, want, got)
	})
}
