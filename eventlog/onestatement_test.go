package eventlog_test

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// kindHook records what it is called with; as a SelectiveHook it
// consumes only its kinds.
type kindHook struct {
	kinds []eventlog.Kind
	mu    sync.Mutex
	calls [][]int64
}

func (h *kindHook) AfterAppend(_ context.Context, _ *sqlx.Tx, events []eventlog.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var seqs []int64
	for _, ev := range events {
		seqs = append(seqs, ev.Seq)
	}
	h.calls = append(h.calls, seqs)
	return nil
}

func (h *kindHook) called() [][]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

type selectiveHook struct{ *kindHook }

func (h selectiveHook) Consumes(kind eventlog.Kind) bool { return slices.Contains(h.kinds, kind) }

// On PostgreSQL a single append with an event id, of a kind no hook
// consumes, is one autocommitted INSERT: one round trip, not BEGIN,
// INSERT, COMMIT. Everything else keeps its transaction; a duplicate
// costs one more statement and answers as in a transaction.
func TestAppendOneRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	rec := &recorder{}
	hook := selectiveHook{&kindHook{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
	log, err := eventlog.New(recordingDB(t, b.URL, rec), &eventlog.Config{Hook: hook})
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })

	plan := func(id, payload string) eventlog.Entry {
		return eventlog.Entry{Kind: eventlog.KindPlanAction, RolloutID: "r1", EventID: id, Payload: json.RawMessage(payload)}
	}
	// trips runs append and returns the exchanges it had with the server,
	// the statements' preparation aside (once per pool connection).
	trips := func(run func()) []string {
		t.Helper()
		rec.reset()
		run()
		var out []string
		for _, tr := range rec.roundTrips() {
			if !strings.HasPrefix(tr, "PREPARE ") {
				out = append(out, strings.Fields(tr)[0])
			}
		}
		return out
	}

	var first eventlog.Result
	got := trips(func() {
		first, err = log.Append(ctx, plan("p-1", `{"step":1}`))
		require.NoError(t, err)
	})
	require.Equal(t, []string{"EXECUTE"}, got)
	require.False(t, first.Duplicate)
	stored, err := log.Get(ctx, first.Event.Seq)
	require.NoError(t, err)
	require.Equal(t, first.Event, stored)

	// The same entry again: a duplicate, found by a second statement.
	got = trips(func() {
		again, err := log.Append(ctx, plan("p-1", `{"step":1}`))
		require.NoError(t, err)
		require.True(t, again.Duplicate)
		require.Equal(t, first.Event, again.Event)
	})
	require.Equal(t, []string{"EXECUTE", "SELECT"}, got)

	// The same event id with other content: a conflict, nothing written.
	got = trips(func() {
		_, err := log.Append(ctx, plan("p-1", `{"step":2}`))
		var ce *eventlog.ConflictError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, first.Event.Seq, ce.Seq)
	})
	require.Equal(t, []string{"EXECUTE", "SELECT"}, got)
	require.Equal(t, 1, countEvents(t, db))

	// Without an event id, a retry by database/sql could store the event
	// twice: two messages, the first committing nothing.
	var plain eventlog.Result
	got = trips(func() {
		plain, err = log.Append(ctx, plan("", `{"step":"it's \\ \u00e9"}`))
		require.NoError(t, err)
	})
	require.Equal(t, []string{"BEGIN;", "COMMIT"}, got)
	stored, err = log.Get(ctx, plain.Event.Seq)
	require.NoError(t, err)
	require.Equal(t, plain.Event, stored)
	require.JSONEq(t, `{"step":"it's \\ é"}`, string(stored.Payload))

	// A kind the hook consumes: a transaction, and the hook sees it.
	var agent eventlog.Result
	got = trips(func() {
		agent, err = log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "h1", EventID: "a-1", Payload: json.RawMessage(`{}`)})
		require.NoError(t, err)
	})
	require.Equal(t, []string{"BEGIN", "EXECUTE", "COMMIT"}, got)
	require.Equal(t, [][]int64{{agent.Event.Seq}}, hook.called())

	// A batch of kinds the hook does not consume does not call it; one
	// with a kind it consumes passes it every new event, as before.
	_, err = log.AppendBatch(ctx, []eventlog.Entry{plan("p-2", `{}`), plan("p-3", `{}`)})
	require.NoError(t, err)
	require.Len(t, hook.called(), 1)
	res, err := log.AppendBatch(ctx, []eventlog.Entry{plan("p-4", `{}`), {Kind: eventlog.KindAgentEvent, HostID: "h1", Payload: json.RawMessage(`{}`)}})
	require.NoError(t, err)
	require.Equal(t, []int64{res[0].Event.Seq, res[1].Event.Seq}, hook.called()[1])
	require.Equal(t, 7, countEvents(t, db))
}

// A hook that is not a SelectiveHook sees every append, and every append
// keeps its transaction.
func TestAppendPlainHookAlwaysCalled(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		hook := &kindHook{}
		log, _ := setup(t, backend, &eventlog.Config{Hook: hook})
		r1, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindPlanAction, EventID: "p-1", Payload: json.RawMessage(`{}`)})
		require.NoError(t, err)
		r2, err := log.AppendBatch(ctx, []eventlog.Entry{{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{}`)}})
		require.NoError(t, err)
		require.Equal(t, [][]int64{{r1.Event.Seq}, {r2[0].Event.Seq}}, hook.called())
	})
}

// A SelectiveHook sees an append only when it consumes one of its kinds,
// and then every new event of it, on both backends.
func TestSelectiveHookSkipped(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		hook := selectiveHook{&kindHook{kinds: []eventlog.Kind{eventlog.KindAgentEvent}}}
		log, db := setup(t, backend, &eventlog.Config{Hook: hook})
		plan := eventlog.Entry{Kind: eventlog.KindPlanAction, Payload: json.RawMessage(`{}`)}
		_, err := log.Append(ctx, plan)
		require.NoError(t, err)
		_, err = log.AppendBatch(ctx, []eventlog.Entry{plan, plan})
		require.NoError(t, err)
		require.Empty(t, hook.called())
		res, err := log.AppendBatch(ctx, []eventlog.Entry{plan, {Kind: eventlog.KindAgentEvent, HostID: "h1", Payload: json.RawMessage(`{}`)}})
		require.NoError(t, err)
		require.Equal(t, [][]int64{{res[0].Event.Seq, res[1].Event.Seq}}, hook.called())
		require.Equal(t, 5, countEvents(t, db))
	})
}

// A single append without an event id, of a kind no hook consumes, is two
// messages on one connection. When the first one's answer is lost it is
// sent again on another connection, and the event is stored once; when
// the COMMIT's answer is lost the error says the append may have
// committed, and it is stored once; the server's refusal of the first
// message leaves no transaction open on the pool's connection.
func TestAppendTwoMessagesLostAnswers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	rec := &recorder{}
	one := recordingDB(t, b.URL, rec)
	one.SetMaxOpenConns(1)
	log, err := eventlog.New(one, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	lose := func(f func(query string) bool) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.lose = f
	}
	effect := func(n int) eventlog.Entry {
		return eventlog.Entry{Kind: eventlog.KindEffect, HostID: "h1", Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
	}
	stored := func(n int) int {
		var count int
		require.NoError(t, db.Get(&count, `SELECT count(*) FROM event_log WHERE payload::text = $1`, fmt.Sprintf(`{"n":%d}`, n)))
		return count
	}
	firstWords := func() []string {
		var out []string
		for _, tr := range rec.roundTrips() {
			out = append(out, strings.Fields(tr)[0])
		}
		return out
	}

	// The first message's answer lost once: sent again, stored once.
	lost := 0
	lose(func(q string) bool {
		if strings.HasPrefix(q, "BEGIN;") && lost == 0 {
			lost++
			return true
		}
		return false
	})
	rec.reset()
	res, err := log.Append(ctx, effect(1))
	require.NoError(t, err)
	require.Equal(t, 1, lost)
	require.Equal(t, []string{"BEGIN;", "BEGIN;", "COMMIT"}, firstWords())
	require.Equal(t, 1, stored(1))
	got, err := log.Get(ctx, res.Event.Seq)
	require.NoError(t, err)
	require.Equal(t, res.Event, got)

	// The COMMIT's answer lost: the outcome is unknown, and said to be.
	lose(func(q string) bool { return q == "COMMIT" })
	_, err = log.Append(ctx, effect(2))
	require.ErrorContains(t, err, "may have committed")
	require.True(t, eventlog.Retryable(err))
	require.Equal(t, 1, stored(2))

	// Lost every time: three attempts, as database/sql makes, then the
	// error; nothing stored.
	lose(func(q string) bool { return strings.HasPrefix(q, "BEGIN;") })
	rec.reset()
	_, err = log.Append(ctx, effect(3))
	require.ErrorIs(t, err, driver.ErrBadConn)
	require.True(t, eventlog.Retryable(err))
	require.Equal(t, []string{"BEGIN;", "BEGIN;", "BEGIN;"}, firstWords())
	require.Zero(t, stored(3))
	lose(nil)

	// Refused by the server: the error is the server's, nothing is stored,
	// and the pool's one connection serves the next append.
	_, err = db.Exec(`CREATE FUNCTION refuse_n5() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.payload::text = '{"n":5}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_n5 BEFORE INSERT ON event_log FOR EACH ROW EXECUTE FUNCTION refuse_n5()`)
	require.NoError(t, err)
	_, err = log.Append(ctx, effect(5))
	var pqErr *pq.Error
	require.ErrorAs(t, err, &pqErr)
	require.Contains(t, pqErr.Message, "refused by the test")
	require.Zero(t, stored(5))
	_, err = log.Append(ctx, effect(6))
	require.NoError(t, err)
	require.Equal(t, 1, stored(6))

	// Cancelled while the server runs the first message: nothing is
	// stored, and the connection, closed inside its transaction, is not
	// the one the next append gets.
	_, err = db.Exec(`CREATE FUNCTION slow_n7() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.payload::text = '{"n":7}' THEN PERFORM pg_sleep(30); END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER slow_n7 BEFORE INSERT ON event_log FOR EACH ROW EXECUTE FUNCTION slow_n7()`)
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = log.Append(short, effect(7))
	require.Error(t, err)
	require.Zero(t, stored(7))
	_, err = log.Append(ctx, effect(8))
	require.NoError(t, err)
	require.Equal(t, 1, stored(8))
	require.Equal(t, 4, countEvents(t, db))
}

// The first message of a single append without an event id takes the
// dimension locks in a statement of its own, whose result set canonlog
// skips to read the insert's seq; with the locks off (as the benchmarks'
// baseline runs) the insert's is the only one. Either way the event comes
// back as stored, with or without a host and rollout.
func TestAppendTwoMessagesResultSets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	for _, locks := range []bool{true, false} {
		t.Run(fmt.Sprintf("locks=%v", locks), func(t *testing.T) {
			rec := &recorder{}
			log, err := eventlog.New(recordingDB(t, b.URL, rec), nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = log.Close() })
			if !locks {
				eventlog.WithoutDimensionLocks(log)
			}
			for _, e := range []eventlog.Entry{
				{Kind: eventlog.KindEffect, HostID: "h'1", RolloutID: "r1", Payload: json.RawMessage(`{"q":"it's"}`)},
				{Kind: eventlog.KindPlanAction, Payload: json.RawMessage(`[1, 2]`)},
			} {
				rec.reset()
				res, err := log.Append(ctx, e)
				require.NoError(t, err)
				trips := rec.roundTrips()
				require.Len(t, trips, 2)
				require.True(t, strings.HasPrefix(trips[0], "BEGIN;"), trips[0])
				require.Equal(t, locks, strings.Contains(trips[0], "pg_advisory_xact_lock_shared"), trips[0])
				require.Equal(t, "COMMIT", trips[1])
				stored, err := log.Get(ctx, res.Event.Seq)
				require.NoError(t, err)
				require.Equal(t, res.Event, stored)
				require.Equal(t, e.HostID, stored.HostID)
			}
		})
	}
	require.Equal(t, 4, countEvents(t, db))
}
