package eventlog_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

func rolloutEvent(kind eventlog.Kind, host, rollout, payload, id string) eventlog.Entry {
	return eventlog.Entry{Kind: kind, HostID: host, RolloutID: rollout, Payload: json.RawMessage(payload), EventID: id}
}

// The read–decide–append loop: a condition holds until an event matching
// it lands after its seq; a violation writes nothing, runs no hook and
// names the first conflicting event.
func TestCondition(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		for _, v := range conditionVariants() {
			t.Run(v.name, func(t *testing.T) { testCondition(t, backend, v) })
		}
	})
}

func testCondition(t *testing.T, backend string, v conditionVariant) {
	ctx := context.Background()
	hook := &recordingHook{}
	log, db := setup(t, backend, v.config(hook))
	failures := eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindAgentEvent}, RolloutID: "r1"}
	_, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "r1", `{"status":"fail"}`, "a1"))
	require.NoError(t, err)

	var seen []eventlog.Event
	cond, err := log.ReadForCondition(ctx, failures, func(ctx context.Context, tx *sqlx.Tx) error {
		var err error
		seen, err = log.QueryTx(ctx, tx, failures)
		return err
	})
	require.NoError(t, err)
	require.Len(t, seen, 1)
	require.Equal(t, seen[0].Seq, cond.AfterSeq)

	// Events the condition does not match: another rollout, another
	// kind, the same rollout without the kind.
	_, err = log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "r2", `{"status":"fail"}`, "a2"))
	require.NoError(t, err)
	_, err = log.Append(ctx, rolloutEvent(eventlog.KindPlanAction, "h1", "r1", `{}`, "p1"))
	require.NoError(t, err)
	decision := rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, "g1")
	res, err := log.If(cond).Append(ctx, decision)
	require.NoError(t, err)
	require.False(t, res.Duplicate)

	// A failure of r1 after the read: the next decision taken on the
	// same read fails, names it, writes nothing and runs no hook.
	late, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h2", "r1", `{"status":"fail"}`, "a3"))
	require.NoError(t, err)
	_, err = log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h3", "r1", `{"status":"fail"}`, "a4"))
	require.NoError(t, err)
	before, hooked := dumpLog(t, db), hook.count()
	for name, appendFn := range map[string]func() error{
		"Append": func() error {
			_, err := log.If(cond).Append(ctx, rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, "g2"))
			return err
		},
		"AppendBatch": func() error {
			_, err := log.If(cond).AppendBatch(ctx, []eventlog.Entry{
				rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, "g2"),
				rolloutEvent(eventlog.KindPlanAction, "h9", "r1", `{}`, ""),
			})
			return err
		},
		"AppendTx": func() error {
			tx, err := db.BeginTxx(ctx, nil)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback() }()
			_, err = log.If(cond).AppendTx(ctx, tx, rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, "g2"))
			return err
		},
	} {
		err := appendFn()
		require.ErrorIs(t, err, eventlog.ErrConditionFailed, name)
		var ce *eventlog.ConditionError
		require.ErrorAs(t, err, &ce, name)
		require.Equal(t, late.Event.Seq, ce.Seq, name)
		require.Equal(t, cond, ce.Condition, name)
		require.False(t, eventlog.Retryable(err), name)
		require.Contains(t, err.Error(), fmt.Sprintf("event %d", late.Event.Seq), name)
		require.Equal(t, before, dumpLog(t, db), name)
		require.Equal(t, hooked, hook.count(), name)
	}

	// PayloadContains narrows the match: a passing result is no
	// conflict for a condition on failures.
	cond, err = log.ReadForCondition(ctx, eventlog.Filter{RolloutID: "r1", PayloadContains: []string{`"fail"`}}, nil)
	require.NoError(t, err)
	_, err = log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h2", "r1", `{"status":"pass"}`, "a5"))
	require.NoError(t, err)
	_, err = log.If(cond).Append(ctx, rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, "g3"))
	require.NoError(t, err)

	// Host and kind conditions.
	cond, err = log.ReadForCondition(ctx, eventlog.Filter{HostID: "h7"}, nil)
	require.NoError(t, err)
	_, err = log.If(cond).Append(ctx, rolloutEvent(eventlog.KindPlanAction, "h7", "r3", `{}`, "p7"))
	require.NoError(t, err)
	_, err = log.If(cond).Append(ctx, rolloutEvent(eventlog.KindPlanAction, "h7", "r3", `{}`, "p8"))
	require.ErrorIs(t, err, eventlog.ErrConditionFailed, "the first conditional append is itself a conflict for the second")
	cond, err = log.ReadForCondition(ctx, eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindVerifyOutcome, eventlog.KindEffect}}, nil)
	require.NoError(t, err)
	eff, err := log.Append(ctx, rolloutEvent(eventlog.KindEffect, "", "", `{}`, ""))
	require.NoError(t, err)
	_, err = log.If(cond).Append(ctx, rolloutEvent(eventlog.KindVerifyOutcome, "", "", `{}`, ""))
	var ce *eventlog.ConditionError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, eff.Event.Seq, ce.Seq)
}

// A malformed condition is refused before anything reaches the database.
func TestConditionInvalid(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		hook := &recordingHook{}
		log, db := setup(t, backend, &eventlog.Config{Hook: hook})
		_, err := log.Append(ctx, entry("h1", `{}`))
		require.NoError(t, err)
		before := dumpLog(t, db)
		for _, tc := range []struct {
			name string
			cond eventlog.Condition
			want string
		}{
			{"NoDimension", eventlog.Condition{}, "names no kind, host or rollout"},
			{"PayloadOnly", eventlog.Condition{Match: eventlog.Filter{PayloadContains: []string{"x"}}}, "names no kind, host or rollout"},
			{"NegativeSeq", eventlog.Condition{Match: eventlog.Filter{HostID: "h"}, AfterSeq: -1}, "AfterSeq is -1"},
			{"MatchAfterSeq", eventlog.Condition{Match: eventlog.Filter{HostID: "h", AfterSeq: 3}}, "Match.AfterSeq"},
			{"MatchLimit", eventlog.Condition{Match: eventlog.Filter{HostID: "h", Limit: 3}}, "Match.Limit"},
			{"MatchTime", eventlog.Condition{Match: eventlog.Filter{HostID: "h", Since: t0}}, "by time"},
			{"BadKind", eventlog.Condition{Match: eventlog.Filter{Kinds: []eventlog.Kind{"Bad Kind"}}}, "Kinds"},
			{"NULHost", eventlog.Condition{Match: eventlog.Filter{HostID: "a\x00b"}}, "HostID"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				check := func(err error) {
					t.Helper()
					require.ErrorIs(t, err, eventlog.ErrInvalidCondition)
					require.ErrorContains(t, err, tc.want)
					require.False(t, eventlog.Retryable(err))
				}
				check(tc.cond.Validate())
				_, err := log.If(tc.cond).Append(ctx, entry("h1", `{}`))
				check(err)
				_, err = log.If(tc.cond).AppendBatch(ctx, []eventlog.Entry{entry("h1", `{}`), entry("h2", `{}`)})
				check(err)
				tx, err := db.BeginTxx(ctx, nil)
				require.NoError(t, err)
				_, err = log.If(tc.cond).AppendTx(ctx, tx, entry("h1", `{}`))
				check(err)
				require.NoError(t, tx.Rollback())
				if tc.cond.AfterSeq == 0 {
					_, err = log.ReadForCondition(ctx, tc.cond.Match, func(context.Context, *sqlx.Tx) error {
						t.Fatal("read ran for a malformed condition")
						return nil
					})
					check(err)
				}
				require.Equal(t, before, dumpLog(t, db))
				require.Equal(t, 1, hook.count())
			})
		}
		// A bad entry is still reported as such under a good condition.
		_, err = log.If(eventlog.Condition{Match: eventlog.Filter{HostID: "h1"}, AfterSeq: 1}).Append(ctx, entry("h1", `{`))
		require.ErrorIs(t, err, eventlog.ErrInvalidPayload)
		require.Equal(t, before, dumpLog(t, db))
	})
}

// A conditional append retried with the same event ids comes back as the
// original result, even when a conflicting event landed after the
// original: its own events are not conflicts.
func TestConditionRetry(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		for _, v := range conditionVariants() {
			t.Run(v.name, func(t *testing.T) {
				ctx := context.Background()
				hook := &recordingHook{}
				log, db := setup(t, backend, v.config(hook))
				cond, err := log.ReadForCondition(ctx, eventlog.Filter{RolloutID: "r1"}, nil)
				require.NoError(t, err)
				single := rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, "g0")
				batch := []eventlog.Entry{
					rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, "g1"),
					rolloutEvent(eventlog.KindPlanAction, "h1", "r1", `{"wave":2}`, "p1"),
				}
				firstOne, err := log.If(cond).Append(ctx, single)
				require.NoError(t, err)
				// The batch decides after the single one.
				condB := eventlog.Condition{Match: cond.Match, AfterSeq: firstOne.Event.Seq}
				first, err := log.If(condB).AppendBatch(ctx, batch)
				require.NoError(t, err)
				hooked := hook.count()

				retry := func() {
					t.Helper()
					one, err := log.If(cond).Append(ctx, single)
					require.NoError(t, err)
					require.True(t, one.Duplicate)
					require.Equal(t, firstOne.Event, one.Event)
					again, err := log.If(condB).AppendBatch(ctx, batch)
					require.NoError(t, err)
					for i := range again {
						require.True(t, again[i].Duplicate)
						require.Equal(t, first[i].Event, again[i].Event)
					}
					require.Equal(t, hooked, hook.count(), "a retry runs no hook")
				}
				// Retried at once: its own events match the condition but
				// are no conflict.
				retry()
				// Retried after another event of r1 landed: still the
				// original.
				_, err = log.Append(ctx, rolloutEvent(eventlog.KindEffect, "h2", "r1", `{}`, "e1"))
				require.NoError(t, err)
				hooked = hook.count()
				retry()
				before := dumpLog(t, db)

				// The same ids with other content are a conflict of ids.
				changed := append([]eventlog.Entry(nil), batch...)
				changed[1].Payload = json.RawMessage(`{"wave":3}`)
				_, err = log.If(cond).AppendBatch(ctx, changed)
				require.ErrorIs(t, err, eventlog.ErrEventIDConflict)
				changedOne := single
				changedOne.Payload = json.RawMessage(`{"decision":"halt"}`)
				_, err = log.If(cond).Append(ctx, changedOne)
				require.ErrorIs(t, err, eventlog.ErrEventIDConflict)
				// One new entry with the stored ones: the condition applies.
				_, err = log.If(cond).AppendBatch(ctx, append(batch, rolloutEvent(eventlog.KindPlanAction, "h1", "r1", `{}`, "p2")))
				require.ErrorIs(t, err, eventlog.ErrConditionFailed)
				// An entry without an event id is never taken for a retry.
				_, err = log.If(cond).Append(ctx, rolloutEvent(eventlog.KindGateDecision, "", "r1", `{"decision":"advance"}`, ""))
				require.ErrorIs(t, err, eventlog.ErrConditionFailed)
				require.Equal(t, before, dumpLog(t, db))
				require.Equal(t, hooked, hook.count())
			})
		}
	})
}

// A conditionVariant is a log configuration whose appends take different
// paths: every append in a transaction (a hook that consumes every kind),
// single conditional appends with an event id in one statement (a hook
// that consumes only effects), and serialized appends.
type conditionVariant struct {
	name   string
	config func(h *recordingHook) *eventlog.Config
}

func conditionVariants() []conditionVariant {
	return []conditionVariant{
		{"Transaction", func(h *recordingHook) *eventlog.Config { return &eventlog.Config{Hook: h} }},
		{"OneStatement", func(h *recordingHook) *eventlog.Config {
			return &eventlog.Config{Hook: &effectsHook{h}}
		}},
		{"Serialized", func(h *recordingHook) *eventlog.Config { return &eventlog.Config{Hook: h, SerializeAppends: true} }},
	}
}

// effectsHook is a recordingHook that consumes effects only.
type effectsHook struct{ *recordingHook }

func (*effectsHook) Consumes(k eventlog.Kind) bool { return k == eventlog.KindEffect }

// waitForLockWait waits until a session of db's server is waiting for an
// advisory lock of the current database.
func waitForLockWait(t *testing.T, db *sqlx.DB, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, db.Get(&waiting, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())`))
		return waiting >= n
	}, 20*time.Second, 2*time.Millisecond)
}

// On PostgreSQL a condition sees an append that inserted before it and
// commits after it; every append shape takes its locks before its seq is
// drawn, so a held condition keeps matching appends from taking seqs
// below a later one's; conditions on disjoint values never wait for each
// other.
func TestConditionLocking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log, db := setup(t, "postgres", nil)

	t.Run("SeesUncommitted", func(t *testing.T) {
		// Without an event id the conditional append is a transaction;
		// with one, a single autocommitted statement, which began before
		// the pending append committed.
		for _, c := range []struct {
			commit bool
			id     string
		}{{true, ""}, {false, ""}, {true, "seen-1"}, {false, "seen-2"}} {
			cond, err := log.ReadForCondition(ctx, eventlog.Filter{RolloutID: "u1"}, nil)
			require.NoError(t, err)
			tx, err := db.BeginTxx(ctx, nil)
			require.NoError(t, err)
			pending, err := log.AppendTx(ctx, tx, rolloutEvent(eventlog.KindAgentEvent, "h1", "u1", `{}`, ""))
			require.NoError(t, err)
			commit := c.commit
			done := make(chan error, 1)
			go func() {
				_, err := log.If(cond).Append(ctx, rolloutEvent(eventlog.KindGateDecision, "", "u1", `{}`, c.id))
				done <- err
			}()
			waitForLockWait(t, db, 1)
			if commit {
				require.NoError(t, tx.Commit())
				err := <-done
				var ce *eventlog.ConditionError
				require.ErrorAs(t, err, &ce)
				require.Equal(t, pending[0].Event.Seq, ce.Seq)
			} else {
				require.NoError(t, tx.Rollback())
				require.NoError(t, <-done)
			}
		}
	})

	t.Run("LockBeforeSeq", func(t *testing.T) {
		// Every append shape of rollout l1 waits for a held condition on
		// l1 before it draws a seq: its seq is above an append to l2 made
		// meanwhile.
		shapes := map[string]func() (int64, error){
			"OneStatement": func() (int64, error) {
				r, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "l1", `{}`, "os1"))
				return r.Event.Seq, err
			},
			"TwoMessages": func() (int64, error) {
				r, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "l1", `{}`, ""))
				return r.Event.Seq, err
			},
			"Batch": func() (int64, error) {
				r, err := log.AppendBatch(ctx, []eventlog.Entry{
					rolloutEvent(eventlog.KindAgentEvent, "h1", "l0", `{}`, ""),
					rolloutEvent(eventlog.KindAgentEvent, "h1", "l1", `{}`, ""),
				})
				if err != nil {
					return 0, err
				}
				return r[0].Event.Seq, nil
			},
			"AppendTx": func() (int64, error) {
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					return 0, err
				}
				r, err := log.AppendTx(ctx, tx, rolloutEvent(eventlog.KindAgentEvent, "h1", "l1", `{}`, ""))
				if err != nil {
					_ = tx.Rollback()
					return 0, err
				}
				return r[0].Event.Seq, tx.Commit()
			},
		}
		for name, appendL1 := range shapes {
			t.Run(name, func(t *testing.T) {
				release := make(chan struct{})
				held := make(chan struct{})
				readDone := make(chan error, 1)
				go func() {
					_, err := log.ReadForCondition(ctx, eventlog.Filter{RolloutID: "l1"}, func(context.Context, *sqlx.Tx) error {
						close(held)
						<-release
						return nil
					})
					readDone <- err
				}()
				<-held
				type result struct {
					seq int64
					err error
				}
				l1 := make(chan result, 1)
				go func() {
					seq, err := appendL1()
					l1 <- result{seq, err}
				}()
				waitForLockWait(t, db, 1)
				l2, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h2", "l2", `{}`, ""))
				require.NoError(t, err, "an append to another rollout waited for the condition")
				close(release)
				require.NoError(t, <-readDone)
				got := <-l1
				require.NoError(t, got.err)
				require.Greater(t, got.seq, l2.Event.Seq)
			})
		}
	})

	t.Run("DisjointDoNotWait", func(t *testing.T) {
		// A conditional append held open on rollout d1 (and host hd1)
		// keeps its values' appends out, and nothing else.
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		_, err = log.If(eventlog.Condition{Match: eventlog.Filter{RolloutID: "d1"}}).AppendTx(ctx, tx,
			rolloutEvent(eventlog.KindGateDecision, "hd1", "d1", `{}`, ""))
		require.NoError(t, err)
		quick, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		for _, c := range []struct {
			cond eventlog.Condition
			e    eventlog.Entry
		}{
			{eventlog.Condition{Match: eventlog.Filter{RolloutID: "d2"}}, rolloutEvent(eventlog.KindPlanAction, "ha", "d2", `{}`, "")},
			{eventlog.Condition{Match: eventlog.Filter{HostID: "hd2"}}, rolloutEvent(eventlog.KindPlanAction, "hd2", "dx", `{}`, "")},
			{eventlog.Condition{Match: eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindEffect}}}, rolloutEvent(eventlog.KindEffect, "hb", "dy", `{}`, "")},
		} {
			_, err := log.If(c.cond).Append(quick, c.e)
			require.NoError(t, err, "%+v", c.cond)
		}
		// Another append of the same kind, and one to host hd1 in another
		// rollout: shared locks do not conflict with each other.
		_, err = log.Append(quick, rolloutEvent(eventlog.KindGateDecision, "hd1", "d3", `{}`, ""))
		require.NoError(t, err)
		// The same rollout waits.
		done := make(chan error, 1)
		go func() {
			_, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h", "d1", `{}`, ""))
			done <- err
		}()
		waitForLockWait(t, db, 1)
		require.NoError(t, tx.Commit())
		require.NoError(t, <-done)
	})

	t.Run("WideBatch", func(t *testing.T) {
		// A batch over more hosts than are locked one by one takes the
		// hosts' wide lock: a host condition waits for it, though it
		// names a host the batch locked no lock of its own for.
		var batch []eventlog.Entry
		for i := range 70 {
			batch = append(batch, rolloutEvent(eventlog.KindAgentEvent, fmt.Sprintf("w%02d", i), "w", `{}`, ""))
		}
		cond, err := log.ReadForCondition(ctx, eventlog.Filter{HostID: "w69"}, nil)
		require.NoError(t, err)
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		res, err := log.AppendTx(ctx, tx, batch...)
		require.NoError(t, err)
		// A plain single append to one of its hosts does not wait.
		quick, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err = log.Append(quick, rolloutEvent(eventlog.KindAgentEvent, "w00", "x", `{}`, ""))
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			_, err := log.If(cond).Append(ctx, rolloutEvent(eventlog.KindPlanAction, "w69", "x", `{}`, ""))
			done <- err
		}()
		waitForLockWait(t, db, 1)
		require.NoError(t, tx.Commit())
		var ce *eventlog.ConditionError
		require.ErrorAs(t, <-done, &ce)
		require.Equal(t, res[69].Event.Seq, ce.Seq)
	})
}

// The property: many read–decide–append loops on overlapping conditions,
// beside plain appends and (on PostgreSQL) transactions held open so that
// commits come out of seq order. Afterwards, from the log alone: every
// decision's read saw exactly the matching events up to its seq, and no
// matching event lies between that seq and the decision's own.
func TestConditionProperty(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		rollouts := []string{"p1", "p2", "p3"}
		hosts := []string{"ph1", "ph2", "ph3", "ph4"}
		kinds := []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindPlanAction}
		matches := []func(r *rand.Rand) eventlog.Filter{
			func(r *rand.Rand) eventlog.Filter { return eventlog.Filter{RolloutID: rollouts[r.IntN(len(rollouts))]} },
			func(r *rand.Rand) eventlog.Filter { return eventlog.Filter{HostID: hosts[r.IntN(len(hosts))]} },
			func(r *rand.Rand) eventlog.Filter {
				return eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindPlanAction}}
			},
			func(r *rand.Rand) eventlog.Filter {
				return eventlog.Filter{RolloutID: rollouts[r.IntN(len(rollouts))], Kinds: []eventlog.Kind{eventlog.KindAgentEvent}}
			},
		}
		randomEntry := func(r *rand.Rand, kind eventlog.Kind, payload string) eventlog.Entry {
			return rolloutEvent(kind, hosts[r.IntN(len(hosts))], rollouts[r.IntN(len(rollouts))], payload, "")
		}
		type decision struct {
			Match    eventlog.Filter `json:"match"`
			AfterSeq int64           `json:"after_seq"`
			Seen     int64           `json:"seen"`
		}
		const deciders, rounds = 4, 25
		var (
			g         errgroup.Group
			stop      = make(chan struct{})
			mu        sync.Mutex
			succeeded = map[int64]decision{}
			refused   int
		)
		for w := range deciders {
			g.Go(func() error {
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for round := range rounds {
					match := matches[r.IntN(len(matches))](r)
					var seen int64
					cond, err := log.ReadForCondition(ctx, match, func(ctx context.Context, tx *sqlx.Tx) error {
						var err error
						seen, err = log.CountTx(ctx, tx, match)
						return err
					})
					if err != nil {
						return err
					}
					time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
					d := decision{Match: match, AfterSeq: cond.AfterSeq, Seen: seen}
					payload, _ := json.Marshal(d)
					e := randomEntry(r, kinds[r.IntN(len(kinds))], string(payload))
					if round%2 == 0 {
						// With an event id, a single conditional append
						// is one statement; without one, a transaction.
						e.EventID = fmt.Sprintf("decision-%d-%d", w, round)
					}
					res, err := log.If(cond).Append(ctx, e)
					mu.Lock()
					switch {
					case err == nil:
						succeeded[res.Event.Seq] = d
					case errors.Is(err, eventlog.ErrConditionFailed):
						refused++
					}
					mu.Unlock()
					if err != nil && !errors.Is(err, eventlog.ErrConditionFailed) {
						return err
					}
				}
				return nil
			})
		}
		var bg errgroup.Group
		for w := range 2 {
			bg.Go(func() error {
				r := rand.New(rand.NewPCG(uint64(100+w), 2))
				for {
					select {
					case <-stop:
						return nil
					default:
					}
					var err error
					if r.IntN(4) == 0 {
						_, err = log.AppendBatch(ctx, []eventlog.Entry{randomEntry(r, kinds[r.IntN(2)], `{}`), randomEntry(r, kinds[r.IntN(2)], `{}`)})
					} else {
						_, err = log.Append(ctx, randomEntry(r, kinds[r.IntN(2)], `{}`))
					}
					if err != nil {
						return err
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		if backend == "postgres" {
			// Transactions that insert, then wait before committing: later
			// seqs commit before theirs.
			bg.Go(func() error {
				r := rand.New(rand.NewPCG(200, 3))
				for {
					select {
					case <-stop:
						return nil
					default:
					}
					tx, err := db.BeginTxx(ctx, nil)
					if err != nil {
						return err
					}
					if _, err := log.AppendTx(ctx, tx, randomEntry(r, kinds[r.IntN(2)], `{}`)); err != nil {
						_ = tx.Rollback()
						return err
					}
					time.Sleep(time.Duration(2+r.IntN(10)) * time.Millisecond)
					if err := tx.Commit(); err != nil {
						return err
					}
				}
			})
		}
		require.NoError(t, g.Wait())
		close(stop)
		require.NoError(t, bg.Wait())
		require.NotEmpty(t, succeeded)
		t.Logf("%d decisions appended, %d refused", len(succeeded), refused)

		var all []eventlog.Event
		for ev, err := range log.Events(ctx, 0, nil) {
			require.NoError(t, err)
			all = append(all, ev)
		}
		matchesEvent := func(f eventlog.Filter, ev eventlog.Event) bool {
			return (f.HostID == "" || f.HostID == ev.HostID) && (f.RolloutID == "" || f.RolloutID == ev.RolloutID) &&
				(len(f.Kinds) == 0 || slices.Contains(f.Kinds, ev.Kind))
		}
		for seq, d := range succeeded {
			var upTo int64
			for _, ev := range all {
				if !matchesEvent(d.Match, ev) {
					continue
				}
				if ev.Seq <= d.AfterSeq {
					upTo++
				} else if ev.Seq < seq {
					t.Errorf("decision %d read up to %d with %+v, but event %d matches and lies between", seq, d.AfterSeq, d.Match, ev.Seq)
				}
			}
			require.Equal(t, upTo, d.Seen, "decision %d: its read saw %d matching events up to seq %d, the log holds %d", seq, d.Seen, d.AfterSeq, upTo)
		}
	})
}

// A database whose schema predates conditional appends gets an error
// that says what to run.
func TestConditionNeedsMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log, db := setup(t, "postgres", nil)
	_, err := db.Exec(`DROP FUNCTION canonlog_append_condition`)
	require.NoError(t, err)
	cond := eventlog.Condition{Match: eventlog.Filter{RolloutID: "r1"}}
	for _, e := range []eventlog.Entry{
		rolloutEvent(eventlog.KindGateDecision, "", "r1", `{}`, "with-id"),
		rolloutEvent(eventlog.KindGateDecision, "", "r1", `{}`, ""),
	} {
		_, err = log.If(cond).Append(ctx, e)
		require.ErrorContains(t, err, "run canonlog migrate")
	}
	require.Equal(t, 0, countEvents(t, db))
}

// A condition needs READ COMMITTED. canonlog's own transactions set it
// whatever the server's default; a caller's transaction of another
// isolation is refused, with nothing written.
func TestConditionIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	rr, err := eventlog.OpenDB(ctx, b.URL+"&default_transaction_isolation=repeatable%20read")
	require.NoError(t, err)
	t.Cleanup(func() { _ = rr.Close() })
	var iso string
	require.NoError(t, rr.Get(&iso, `SHOW transaction_isolation`))
	require.Equal(t, "repeatable read", iso)
	log, err := eventlog.New(rr, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })

	cond, err := log.ReadForCondition(ctx, eventlog.Filter{RolloutID: "i1"}, func(ctx context.Context, tx *sqlx.Tx) error {
		return tx.GetContext(ctx, &iso, `SHOW transaction_isolation`)
	})
	require.NoError(t, err)
	require.Equal(t, "read committed", iso)
	failure, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "i1", `{}`, "a1"))
	require.NoError(t, err)
	for _, id := range []string{"with-id", ""} { // one statement, then a transaction
		_, err = log.If(cond).Append(ctx, rolloutEvent(eventlog.KindGateDecision, "", "i1", `{}`, id))
		var ce *eventlog.ConditionError
		require.ErrorAs(t, err, &ce, "id %q", id)
		require.Equal(t, failure.Event.Seq, ce.Seq)
	}
	_, err = log.If(eventlog.Condition{Match: cond.Match, AfterSeq: failure.Event.Seq}).Append(ctx,
		rolloutEvent(eventlog.KindGateDecision, "", "i1", `{}`, "with-id"))
	require.NoError(t, err)

	tx, err := rr.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	_, err = log.If(cond).AppendTx(ctx, tx, rolloutEvent(eventlog.KindGateDecision, "", "i2", `{}`, ""))
	require.ErrorContains(t, err, "a conditional append needs a READ COMMITTED transaction; this one is REPEATABLE READ")
	require.NoError(t, tx.Rollback())
	require.Equal(t, 2, countEvents(t, db))
}
