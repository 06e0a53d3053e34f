package probefailures_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/probefailures"
)

func TestFailureMatch(t *testing.T) {
	t.Parallel()
	p := probefailures.New()
	m := probefailures.FailureMatch("r1")
	require.Equal(t, eventlog.Filter{Kinds: p.Kinds(), RolloutID: "r1", PayloadContains: p.PayloadMarkers()}, m)
	require.NoError(t, eventlog.Condition{Match: m}.Validate(), "a valid condition")
}

// decision is a gate decision for rollout, with an event id so that a
// retry can be told from a new decision.
func decision(rollout, eventID string) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindGateDecision, RolloutID: rollout, EventID: eventID,
		Payload: json.RawMessage(`{"decision":"advance"}`)}
}

const enforcePass = `{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"ssh",` +
	`"sub_results":[{"control_id":"C1","framework":"cis","status":"pass"}]}`

func TestGate(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _, db := setup(t, backend)
		store := probefailures.NewStore(db)
		_, err := log.AppendBatch(ctx, []eventlog.Entry{
			probe("web-1", "r1", failing("ssh", "cis:C1", "cis:C2")),
			probe("web-2", "r1", failing("ssh", "cis:C1")),
			probe("web-3", "r2", failing("ssh", "cis:C9")),
		})
		require.NoError(t, err)

		// read is a gate reading of r1, checked against the view and the
		// log's head.
		read := func(t *testing.T) probefailures.GateReading {
			t.Helper()
			g, err := store.Gate(ctx, log, "r1")
			require.NoError(t, err)
			require.Equal(t, "r1", g.RolloutID)
			require.Equal(t, probefailures.FailureMatch("r1"), g.Condition.Match)
			require.Equal(t, lastSeq(t, log), g.Condition.AfterSeq, "complete up to the log's head")
			n, err := store.CountFailingHosts(ctx, "r1")
			require.NoError(t, err)
			require.Equal(t, n, g.FailingHosts)
			sum, err := store.Summary(ctx, "r1")
			require.NoError(t, err)
			require.Equal(t, sum, g.Controls)
			return g
		}

		t.Run("reading", func(t *testing.T) {
			g := read(t)
			require.Equal(t, 2, g.FailingHosts)
			require.Equal(t, []probefailures.ControlSummary{
				{ControlID: "C1", Framework: "cis", FailingHosts: 2},
				{ControlID: "C2", Framework: "cis", FailingHosts: 1},
			}, g.Controls)
			g, err := store.Gate(ctx, log, "r-none")
			require.NoError(t, err)
			require.Zero(t, g.FailingHosts)
			require.Equal(t, []probefailures.ControlSummary{}, g.Controls)
		})

		t.Run("unrelated_events_leave_the_condition_holding", func(t *testing.T) {
			g := read(t)
			for _, e := range []struct {
				what  string
				entry eventlog.Entry
			}{
				{"a passing result, without a marker", probe("web-1", "r1", enforcePass)},
				{"a failure of another rollout", probe("web-4", "r2", failing("ssh", "cis:C1"))},
				{"a failure of no rollout", probe("web-5", "", failing("ssh", "cis:C1"))},
				{"another kind", eventlog.Entry{Kind: eventlog.KindEffect, RolloutID: "r1", Payload: json.RawMessage(`{"status":"fail"}`)}},
				{"another decision", decision("r1", "r1/decision/0")},
			} {
				_, err := log.Append(ctx, e.entry)
				require.NoError(t, err, e.what)
			}
			res, err := log.If(g.Condition).Append(ctx, decision("r1", "r1/decision/1"))
			require.NoError(t, err)
			require.False(t, res.Duplicate)
		})

		t.Run("a_failure_of_the_rollout_fails_the_decision", func(t *testing.T) {
			g := read(t)
			failed, err := log.Append(ctx, probe("web-6", "r1", failing("ssh", "cis:C3")))
			require.NoError(t, err)
			_, err = log.Append(ctx, probe("web-1", "r1", enforcePass))
			require.NoError(t, err)
			before := lastSeq(t, log)

			_, err = log.If(g.Condition).Append(ctx, decision("r1", "r1/decision/2"))
			var ce *eventlog.ConditionError
			require.ErrorAs(t, err, &ce)
			require.ErrorIs(t, err, eventlog.ErrConditionFailed)
			require.Equal(t, failed.Event.Seq, ce.Seq, "names the failure")
			require.Equal(t, before, lastSeq(t, log), "nothing was written")
			n, err := log.Count(ctx, eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindGateDecision}, RolloutID: "r1"})
			require.NoError(t, err)
			require.EqualValues(t, 2, n)

			// Read again, and the decision lands; its retry is the
			// original's result, even under the old condition.
			g2 := read(t)
			require.Equal(t, g.FailingHosts+1, g2.FailingHosts)
			res, err := log.If(g2.Condition).Append(ctx, decision("r1", "r1/decision/2"))
			require.NoError(t, err)
			again, err := log.If(g.Condition).Append(ctx, decision("r1", "r1/decision/2"))
			require.NoError(t, err)
			require.True(t, again.Duplicate)
			require.Equal(t, res.Event.Seq, again.Event.Seq)
		})

		t.Run("an_observe_mode_failure_fails_it_too", func(t *testing.T) {
			// FailureMatch is wider than the rows: a conservative refusal.
			g := read(t)
			_, err := log.Append(ctx, probe("web-7", "r1",
				`{"type":"ProbeResult","mode":"observe","status":"fail","probe_name":"ssh"}`))
			require.NoError(t, err)
			require.Equal(t, g.FailingHosts, read(t).FailingHosts, "it added no row")
			_, err = log.If(g.Condition).Append(ctx, decision("r1", "r1/decision/3"))
			require.ErrorIs(t, err, eventlog.ErrConditionFailed)
		})

		t.Run("invalid", func(t *testing.T) {
			for _, rollout := range []string{"", "r1\x00"} {
				_, err := store.Gate(ctx, log, rollout)
				require.ErrorIs(t, err, probefailures.ErrInvalidQuery, "%q", rollout)
			}
			_, err := store.Gate(ctx, nil, "r1")
			require.ErrorContains(t, err, "log is nil")
		})
	})
}

// On PostgreSQL a reading waits for a failure of its rollout that was
// inserted but not committed, and counts it, even when events of other
// rollouts committed after it with greater seqs.
func TestGateWaitsForUncommittedFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log, _, db := setup(t, "postgres")
	store := probefailures.NewStore(db)

	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	var holder int
	require.NoError(t, tx.GetContext(ctx, &holder, `SELECT pg_backend_pid()`))
	pending, err := log.AppendTx(ctx, tx, probe("web-1", "r1", failing("ssh", "cis:C1")))
	require.NoError(t, err)
	later, err := log.Append(ctx, probe("web-2", "r2", failing("ssh", "cis:C1")))
	require.NoError(t, err)
	require.Greater(t, later.Event.Seq, pending[0].Event.Seq, "committed first, with the greater seq")

	type reading struct {
		g   probefailures.GateReading
		err error
	}
	done := make(chan reading, 1)
	go func() {
		g, err := store.Gate(ctx, log, "r1")
		done <- reading{g, err}
	}()
	waitBlockedBy(t, db, holder)
	require.NoError(t, tx.Commit())
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, 1, r.g.FailingHosts, "the failure committed while the reading waited is counted")
	require.Equal(t, later.Event.Seq, r.g.Condition.AfterSeq)
}

// waitBlockedBy waits until a session of the server waits for a lock that
// holderPid holds.
func waitBlockedBy(t *testing.T, db *sqlx.DB, holderPid int) {
	t.Helper()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, db.Get(&waiting, `SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holderPid))
		return waiting > 0
	}, 30*time.Second, 5*time.Millisecond)
}

func lastSeq(t *testing.T, log *eventlog.Log) int64 {
	t.Helper()
	seq, err := log.LastSeq(context.Background())
	require.NoError(t, err)
	return seq
}
