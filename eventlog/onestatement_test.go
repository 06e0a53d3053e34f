package eventlog_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
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
	// twice: a transaction.
	got = trips(func() {
		_, err := log.Append(ctx, plan("", `{"step":3}`))
		require.NoError(t, err)
	})
	require.Equal(t, []string{"BEGIN", "EXECUTE", "COMMIT"}, got)

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
