package eventlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// Contract 1: an entry with an event id lands once.
func TestExactlyOnce(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		t.Run("RetryReturnsOriginal", func(t *testing.T) {
			hook := &recordingHook{}
			clock := eventlogtest.NewFakeClock(t0)
			log, db := setup(t, backend, &eventlog.Config{Hook: hook, Clock: clock})
			e := eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "h1", RolloutID: "r1",
				Payload: json.RawMessage(`{"x": 1}`), EventID: "agent-42"}
			first, err := log.Append(ctx, e)
			require.NoError(t, err)
			require.False(t, first.Duplicate)

			// A retry that leaves TS to the clock is still the same event.
			clock.Advance(time.Hour)
			again, err := log.Append(ctx, e)
			require.NoError(t, err)
			require.True(t, again.Duplicate)
			require.Equal(t, first.Event, again.Event)
			require.Equal(t, 1, countEvents(t, db))
			require.Equal(t, 1, hook.count(), "a duplicate must not re-apply projections")

			// Inside a batch: the duplicate is flagged, the new entry lands.
			res, err := log.AppendBatch(ctx, []eventlog.Entry{entry("h2", `{"y":2}`), e})
			require.NoError(t, err)
			require.False(t, res[0].Duplicate)
			require.True(t, res[1].Duplicate)
			require.Equal(t, first.Event.Seq, res[1].Event.Seq)
			require.Equal(t, 2, countEvents(t, db))
			require.Equal(t, 2, hook.count())
		})

		t.Run("SameIDTwiceInOneBatch", func(t *testing.T) {
			log, db := setup(t, backend, nil)
			e := eventlog.Entry{Kind: "k", Payload: json.RawMessage(`{}`), EventID: "twice"}
			res, err := log.AppendBatch(ctx, []eventlog.Entry{e, entry("h", `{}`), e})
			require.NoError(t, err)
			require.False(t, res[0].Duplicate)
			require.True(t, res[2].Duplicate)
			require.Equal(t, res[0].Event.Seq, res[2].Event.Seq)
			require.Equal(t, 2, countEvents(t, db))
		})

		t.Run("SameIDDifferentContentInOneBatch", func(t *testing.T) {
			// The owner of the id is an entry of the failing batch itself:
			// its seq is never stored (and on SQLite the next append takes
			// it), so the error names the entry, not a seq.
			log, db := setup(t, backend, nil)
			_, err := log.Append(ctx, entry("h", `{"seed":1}`))
			require.NoError(t, err)
			before := dumpLog(t, db)
			a := eventlog.Entry{Kind: "k", Payload: json.RawMessage(`{"v":1}`), EventID: "twice"}
			b := a
			b.Payload = json.RawMessage(`{"v":2}`)
			_, err = log.AppendBatch(ctx, []eventlog.Entry{entry("h", `{}`), a, entry("h", `{}`), b})
			require.ErrorIs(t, err, eventlog.ErrEventIDConflict)
			var ce *eventlog.ConflictError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, eventlog.ConflictError{Index: 3, EventID: "twice", OtherIndex: 1, Field: "payload"}, *ce)
			require.Equal(t, `eventlog: entry 3: event id "twice" is already used by entry 1 of the same append with a different payload`, err.Error())
			require.Equal(t, before, dumpLog(t, db))
		})

		t.Run("DifferentContentIsAConflict", func(t *testing.T) {
			log, db := setup(t, backend, nil)
			ts := t0.Add(time.Minute)
			orig := eventlog.Entry{Kind: "k", TS: ts, HostID: "h", RolloutID: "r", Payload: json.RawMessage(`{"a":1}`), EventID: "id-1"}
			stored, err := log.Append(ctx, orig)
			require.NoError(t, err)
			for _, tc := range []struct {
				field  string
				mutate func(*eventlog.Entry)
			}{
				{"kind", func(e *eventlog.Entry) { e.Kind = "other" }},
				{"host_id", func(e *eventlog.Entry) { e.HostID = "h2" }},
				{"rollout_id", func(e *eventlog.Entry) { e.RolloutID = "" }},
				{"payload", func(e *eventlog.Entry) { e.Payload = json.RawMessage(`{"a": 1}`) }},
				{"ts", func(e *eventlog.Entry) { e.TS = ts.Add(time.Microsecond) }},
			} {
				e := orig
				tc.mutate(&e)
				_, err := log.Append(ctx, e)
				require.ErrorIs(t, err, eventlog.ErrEventIDConflict, tc.field)
				var ce *eventlog.ConflictError
				require.ErrorAs(t, err, &ce)
				require.Equal(t, tc.field, ce.Field)
				require.Equal(t, stored.Event.Seq, ce.Seq)
				require.Equal(t, "id-1", ce.EventID)
			}
			require.Equal(t, 1, countEvents(t, db))
		})

		t.Run("ConcurrentSameID", func(t *testing.T) {
			log, db := setup(t, backend, nil)
			const n = 16
			e := eventlog.Entry{Kind: "k", HostID: "h", Payload: json.RawMessage(`{"race":true}`), EventID: "racy"}
			results := make([]eventlog.Result, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					results[i], errs[i] = log.Append(ctx, e)
				})
			}
			close(start)
			wg.Wait()
			fresh := 0
			for i := range n {
				require.NoError(t, errs[i])
				require.Equal(t, results[0].Event.Seq, results[i].Event.Seq)
				if !results[i].Duplicate {
					fresh++
				}
			}
			require.Equal(t, 1, fresh, "exactly one append lands")
			require.Equal(t, 1, countEvents(t, db))
		})
	})
}

// Contract 3: the database itself refuses to change history.
func TestAppendOnly(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		_, err := log.AppendBatch(ctx, []eventlog.Entry{entry("h", `{"a":1}`), entry("h", `{"a":2}`)})
		require.NoError(t, err)
		before := dumpLog(t, db)

		stmts := []string{
			`UPDATE event_log SET host_id = 'evil'`,
			`UPDATE event_log SET kind = 'x' WHERE seq = -1`, // matches no row: still refused on PostgreSQL
			`DELETE FROM event_log`,
			`DELETE FROM event_log WHERE seq = 1`,
		}
		if backend == "postgres" {
			stmts = append(stmts, `TRUNCATE event_log`, `TRUNCATE event_log CASCADE`)
		}
		for _, stmt := range stmts {
			_, err := db.ExecContext(ctx, stmt)
			if backend == "sqlite" && strings.Contains(stmt, "seq = -1") {
				// SQLite has only row-level triggers: a statement touching no
				// row changes nothing either way.
				continue
			}
			require.Error(t, err, stmt)
			require.Contains(t, err.Error(), "append-only", stmt)
		}
		require.Equal(t, before, dumpLog(t, db))
	})
}

// Contract 4: the payload is opaque and byte-exact; bad payloads are refused
// with an error that says which, and nothing is written.
func TestPayload(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()

		t.Run("ByteExact", func(t *testing.T) {
			log, _ := setup(t, backend, nil)
			for _, p := range []string{
				`{ "b":1,  "a":[1, 2] }`,
				"{\n\t\"z\": \"\\u00e9\\n\", \"a\": \"é\", \"emoji\": \"\\ud83d\\ude00\"\n}",
				`[1.0, 1e3, -0, 12345678901234567890]`,
				`"just a string"`,
				`  null  `,
				`{"a":1,"a":2}`,
			} {
				res, err := log.Append(ctx, entry("h", p))
				require.NoError(t, err, p)
				got, err := log.Get(ctx, res.Event.Seq)
				require.NoError(t, err)
				require.Equal(t, p, string(got.Payload))
				page, err := log.Query(ctx, eventlog.Filter{AfterSeq: res.Event.Seq - 1, Limit: 1})
				require.NoError(t, err)
				require.Equal(t, p, string(page[0].Payload))
			}
		})

		t.Run("Refused", func(t *testing.T) {
			log, db := setup(t, backend, &eventlog.Config{MaxPayloadBytes: 64})
			_, err := log.Append(ctx, entry("h", `{"seed":1}`))
			require.NoError(t, err)
			before := dumpLog(t, db)
			for _, tc := range []struct {
				name    string
				payload string
				want    error
			}{
				{"NotJSON", `not-json{`, eventlog.ErrInvalidPayload},
				{"Truncated", `{"a":`, eventlog.ErrInvalidPayload},
				{"Empty", ``, eventlog.ErrInvalidPayload},
				{"TwoDocuments", `{} {}`, eventlog.ErrInvalidPayload},
				{"BadUTF8", "\"\xff\xfe\"", eventlog.ErrInvalidPayload},
				{"RawNUL", "{\"a\":\"x\x00\"}", eventlog.ErrPayloadNUL},
				{"EscapedNUL", `{"a":"x\u0000"}`, eventlog.ErrPayloadNUL},
				{"TooLarge", `{"a":"` + strings.Repeat("x", 64) + `"}`, eventlog.ErrPayloadTooLarge},
			} {
				_, err := log.Append(ctx, entry("h", tc.payload))
				require.ErrorIs(t, err, tc.want, tc.name)
				var ee *eventlog.EntryError
				require.ErrorAs(t, err, &ee, tc.name)
				require.Equal(t, "payload", ee.Field)
			}
			// An escaped backslash before u0000 is not a NUL.
			_, err = log.Append(ctx, entry("h", `{"a":"\\u0000"}`))
			require.NoError(t, err)
			after := dumpLog(t, db)
			require.Equal(t, before, after[:len(before)])
			require.Len(t, after, len(before)+1)
		})

		t.Run("DefaultLimitIsOneMiB", func(t *testing.T) {
			log, db := setup(t, backend, nil)
			require.Equal(t, 1<<20, log.MaxPayloadBytes())
			big := `"` + strings.Repeat("x", 1<<20-2) + `"` // exactly 1 MiB
			_, err := log.Append(ctx, entry("h", big))
			require.NoError(t, err)
			_, err = log.Append(ctx, entry("h", big+" "))
			require.ErrorIs(t, err, eventlog.ErrPayloadTooLarge)
			require.Equal(t, 1, countEvents(t, db))
		})
	})
}

// Contract 5: ts comes from the entry or the injected clock, is truncated
// to microseconds, and round-trips exactly.
func TestTimestamps(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		clock := eventlogtest.NewFakeClock(t0)
		log, db := setup(t, backend, &eventlog.Config{Clock: clock})

		fine := t0.Add(42*time.Second + 123456789*time.Nanosecond)
		want := t0.Add(42*time.Second + 123456*time.Microsecond)
		e := entry("h", `{}`)
		e.TS = fine.In(time.FixedZone("x", 5*3600+1800))
		res, err := log.Append(ctx, e)
		require.NoError(t, err)
		require.True(t, want.Equal(res.Event.TS), "returned %s", res.Event.TS)
		require.Equal(t, time.UTC, res.Event.TS.Location())
		got, err := log.Get(ctx, res.Event.Seq)
		require.NoError(t, err)
		require.True(t, want.Equal(got.TS), "stored %s, want %s", got.TS, want)
		require.Equal(t, res.Event, got)

		// A zero TS takes the injected clock, not the database's or time.Now.
		clock.Set(time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC))
		res, err = log.Append(ctx, entry("h", `{}`))
		require.NoError(t, err)
		require.Equal(t, time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), res.Event.TS)
		got, err = log.Get(ctx, res.Event.Seq)
		require.NoError(t, err)
		require.Equal(t, res.Event.TS, got.TS)

		// The database has no default to fall back on.
		_, err = db.ExecContext(ctx, `INSERT INTO event_log (kind, payload) VALUES ('k', '{}')`)
		require.Error(t, err)

		// Out of range timestamps are refused.
		e.TS = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
		_, err = log.Append(ctx, e)
		require.ErrorIs(t, err, eventlog.ErrInvalidEntry)
		require.Equal(t, 2, countEvents(t, db))

		// So is an explicit time that would be stored as the zero time:
		// read back, it would mean "now" to the next append.
		for _, ts := range []time.Time{
			time.Date(1, 1, 1, 0, 0, 0, 999, time.UTC),
			time.Date(1, 1, 1, 1, 0, 0, 500, time.FixedZone("+01:00", 3600)),
		} {
			e.TS = ts
			_, err = log.Append(ctx, e)
			var ee *eventlog.EntryError
			require.ErrorAs(t, err, &ee, "%s", ts)
			require.Equal(t, "ts", ee.Field)
			require.ErrorIs(t, err, eventlog.ErrInvalidEntry)
			require.ErrorIs(t, e.Validate(eventlog.DefaultMaxPayloadBytes), eventlog.ErrInvalidEntry)
		}
		require.Equal(t, 2, countEvents(t, db))
		// The first storable microsecond is stored as given.
		e.TS = time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC)
		res, err = log.Append(ctx, e)
		require.NoError(t, err)
		require.Equal(t, e.TS, res.Event.TS)
		got, err = log.Get(ctx, res.Event.Seq)
		require.NoError(t, err)
		require.Equal(t, e.TS, got.TS)
	})
}

// Contract 8: seqs are unique and increase in assignment order; concurrent
// appends lose nothing.
func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		const writers, perWriter = 16, 40
		seqs := make([][]int64, writers)
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					var err error
					if i%4 == 0 { // mix single appends with small batches
						var res []eventlog.Result
						res, err = log.AppendBatch(ctx, []eventlog.Entry{
							entry(fmt.Sprint("w", w), fmt.Sprintf(`{"w":%d,"i":%d,"b":0}`, w, i)),
							entry(fmt.Sprint("w", w), fmt.Sprintf(`{"w":%d,"i":%d,"b":1}`, w, i)),
						})
						for _, r := range res {
							seqs[w] = append(seqs[w], r.Event.Seq)
						}
					} else {
						var res eventlog.Result
						res, err = log.Append(ctx, entry(fmt.Sprint("w", w), fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)))
						seqs[w] = append(seqs[w], res.Event.Seq)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		seen := map[int64]bool{}
		total := 0
		for w := range writers {
			for i, s := range seqs[w] {
				require.False(t, seen[s], "seq %d handed out twice", s)
				seen[s] = true
				if i > 0 {
					require.Greater(t, s, seqs[w][i-1], "one writer's seqs increase")
				}
				total++
			}
		}
		want := writers * (perWriter + perWriter/4)
		require.Equal(t, want, total)
		require.Equal(t, want, countEvents(t, db))
		var perHost int
		require.NoError(t, db.Get(&perHost, `SELECT COUNT(*) FROM event_log WHERE host_id = 'w7'`))
		require.Equal(t, perWriter+perWriter/4, perHost)
	})
}

// With SerializeAppends, a second append waits for the first transaction,
// so commit order is seq order (PostgreSQL; SQLite always serializes).
func TestSerializeAppends(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, &eventlog.Config{SerializeAppends: true})
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		first, err := log.AppendTx(ctx, tx, entry("h", `{"n":1}`))
		require.NoError(t, err)

		done := make(chan eventlog.Result, 1)
		go func() {
			res, err := log.Append(context.Background(), entry("h", `{"n":2}`))
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		select {
		case <-done:
			t.Fatal("second append committed while the first transaction was open")
		case <-time.After(300 * time.Millisecond):
		}
		require.NoError(t, tx.Commit())
		second := <-done
		require.Greater(t, second.Event.Seq, first[0].Event.Seq)
	})
}

func TestEntryValidation(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		long := strings.Repeat("h", 513)
		for _, tc := range []struct {
			name  string
			e     eventlog.Entry
			field string
			want  error
		}{
			{"EmptyKind", eventlog.Entry{Payload: json.RawMessage(`{}`)}, "kind", eventlog.ErrInvalidKind},
			{"UpperKind", eventlog.Entry{Kind: "Agent", Payload: json.RawMessage(`{}`)}, "kind", eventlog.ErrInvalidKind},
			{"SQLKind", eventlog.Entry{Kind: "a'; DROP TABLE event_log; --", Payload: json.RawMessage(`{}`)}, "kind", eventlog.ErrInvalidKind},
			{"LongKind", eventlog.Entry{Kind: eventlog.Kind("a" + strings.Repeat("b", 64)), Payload: json.RawMessage(`{}`)}, "kind", eventlog.ErrInvalidKind},
			{"NoPayload", eventlog.Entry{Kind: "k"}, "payload", eventlog.ErrInvalidPayload},
			{"LongHost", eventlog.Entry{Kind: "k", HostID: long, Payload: json.RawMessage(`{}`)}, "host_id", eventlog.ErrInvalidEntry},
			{"NULRollout", eventlog.Entry{Kind: "k", RolloutID: "r\x00", Payload: json.RawMessage(`{}`)}, "rollout_id", eventlog.ErrInvalidEntry},
			{"BadUTF8EventID", eventlog.Entry{Kind: "k", EventID: "\xff", Payload: json.RawMessage(`{}`)}, "event_id", eventlog.ErrInvalidEntry},
		} {
			_, err := log.Append(ctx, tc.e)
			require.ErrorIs(t, err, tc.want, tc.name)
			var ee *eventlog.EntryError
			require.ErrorAs(t, err, &ee, tc.name)
			require.Equal(t, tc.field, ee.Field, tc.name)
		}
		// SQL metacharacters are data, not SQL.
		res, err := log.Append(ctx, eventlog.Entry{Kind: "k", HostID: `h'; DROP TABLE event_log; --`, Payload: json.RawMessage(`{}`)})
		require.NoError(t, err)
		require.Equal(t, `h'; DROP TABLE event_log; --`, res.Event.HostID)
		require.Equal(t, 1, countEvents(t, db))
	})
}

func TestKindValidate(t *testing.T) {
	t.Parallel()
	for _, k := range eventlog.PredefinedKinds() {
		require.NoError(t, k.Validate())
	}
	require.Len(t, eventlog.PredefinedKinds(), 7)
	require.Equal(t, eventlog.Kind("agent_event"), eventlog.KindAgentEvent)
	require.Equal(t, eventlog.Kind("rollout_event"), eventlog.KindRolloutEvent)
	require.NoError(t, eventlog.Kind("a").Validate())
	require.NoError(t, eventlog.Kind("a"+strings.Repeat("9", 63)).Validate())
	for _, bad := range []eventlog.Kind{"", "1abc", "_a", "a-b", "aB", "a b", "é", eventlog.Kind("a" + strings.Repeat("9", 64))} {
		require.ErrorIs(t, bad.Validate(), eventlog.ErrInvalidKind, string(bad))
	}
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t, "sqlite").Open(t)
	_, err := eventlog.New(db, &eventlog.Config{MaxPayloadBytes: -1})
	require.ErrorContains(t, err, "MaxPayloadBytes")
	l, err := eventlog.New(db, nil)
	require.NoError(t, err)
	require.Equal(t, eventlog.DefaultMaxPayloadBytes, l.MaxPayloadBytes())
	require.IsType(t, eventlog.SystemClock{}, l.Clock())

	other := sqlx.NewDb(db.DB, "mysql")
	_, err = eventlog.New(other, nil)
	require.ErrorContains(t, err, "unsupported database driver")
}

// A hook error rolls the whole append back.
func TestHookError(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		boom := errors.New("boom")
		hook := &recordingHook{fail: boom}
		log, db := setup(t, backend, &eventlog.Config{Hook: hook})
		_, err := log.AppendBatch(ctx, []eventlog.Entry{entry("h", `{}`), entry("h", `{}`)})
		require.ErrorIs(t, err, boom)
		require.Equal(t, 0, countEvents(t, db))
		e := entry("h", `{}`)
		e.EventID = "retry-me"
		_, err = log.Append(ctx, e)
		require.ErrorIs(t, err, boom)
		hook.fail = nil
		res, err := log.Append(ctx, e)
		require.NoError(t, err)
		require.False(t, res.Duplicate, "the failed append left no trace of its event id")
	})
}

type recordingHook struct {
	mu     sync.Mutex
	events []eventlog.Event
	fail   error
}

func (h *recordingHook) AfterAppend(_ context.Context, _ *sqlx.Tx, events []eventlog.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail != nil {
		return h.fail
	}
	h.events = append(h.events, events...)
	return nil
}

func (h *recordingHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.events)
}

// dumpLog returns every stored row as text, for before/after comparisons.
func dumpLog(t *testing.T, db *sqlx.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT seq, ts, kind, COALESCE(host_id, ''), COALESCE(rollout_id, ''), payload, COALESCE(event_id, '') FROM event_log ORDER BY seq`)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var seq int64
		var ts any
		var kind, host, rollout, payload, id string
		require.NoError(t, rows.Scan(&seq, &ts, &kind, &host, &rollout, &payload, &id))
		out = append(out, fmt.Sprint(seq, ts, kind, host, rollout, payload, id))
	}
	require.NoError(t, rows.Err())
	return out
}
