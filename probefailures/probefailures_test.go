package probefailures_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
	"github.com/canonlog/canonlog/projectiontest"
)

var t0 = time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)

func setup(t *testing.T, backend string) (*eventlog.Log, *projection.Registry, *sqlx.DB) {
	t.Helper()
	return setupOn(t, dbtest.New(t, backend))
}

func setupOn(t testing.TB, b dbtest.Backend) (*eventlog.Log, *projection.Registry, *sqlx.DB) {
	t.Helper()
	db := b.Open(t)
	reg := projection.Must(projection.NewRegistry(probefailures.New()))
	clock := eventlogtest.NewFakeClock(t0)
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg, Clock: clock})
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	_, err = projection.Migrate(context.Background(), log, reg)
	require.NoError(t, err)
	return log, reg, db
}

func probe(host, rollout, payload string) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host, RolloutID: rollout, Payload: json.RawMessage(payload)}
}

func rows(t *testing.T, db *sqlx.DB) []probefailures.Row {
	t.Helper()
	store := probefailures.NewStore(db)
	var rollouts []string
	require.NoError(t, db.Select(&rollouts, `SELECT DISTINCT COALESCE(rollout_id, '') FROM probe_failures ORDER BY 1`))
	var out []probefailures.Row
	for _, r := range rollouts {
		if r == "" {
			continue
		}
		got, err := store.Failures(context.Background(), probefailures.FailureFilter{RolloutID: r, Limit: probefailures.MaxLimit})
		require.NoError(t, err)
		out = append(out, got...)
	}
	var total int
	require.NoError(t, db.Get(&total, `SELECT COUNT(*) FROM probe_failures`))
	require.Len(t, out, total, "every row belongs to a rollout in these tests")
	return out
}

const enforceFail = `{"type": "ProbeResult", "mode": "enforce", "status": "fail",
 "probe_name": "ssh-hardening", "observed_at": "2026-05-16T01:00:00.5Z",
 "sub_results": [
   {"control_id": "CIS-5.2.1", "framework": "cis", "status": "fail"},
   {"control_id": "CIS-5.2.2", "framework": "cis", "status": "pass"},
   {"control_id": "NIST-AC-17", "framework": "nist", "status": "fail"}]}`

func TestRules(t *testing.T) {
	t.Parallel()
	observed := time.Date(2026, 5, 16, 1, 0, 0, 500000000, time.UTC)
	type want struct{ control, framework string }
	cases := []struct {
		name    string
		payload string
		want    []want
		obsTS   time.Time // zero: observed
	}{
		{"EnforceFailMixed", enforceFail, []want{{"CIS-5.2.1", "cis"}, {"NIST-AC-17", "nist"}}, time.Time{}},
		{"ObserveMode", `{"type":"ProbeResult","mode":"observe","status":"fail","probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}`, nil, time.Time{}},
		{"Pass", `{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"pass"}]}`, nil, time.Time{}},
		{"FailWithoutFailingSubResults", `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"pass"}]}`, nil, time.Time{}},
		{"NoSubResults", `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"p"}`, nil, time.Time{}},
		{"MissingObservedAtUsesEventTS", `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"p","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}`, []want{{"C1", "cis"}}, t0},
		{"SameControlTwice", `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"p","observed_at":"2026-05-16T01:00:00.5Z","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"},{"control_id":"C1","framework":"cis","status":"fail"}]}`, []want{{"C1", "cis"}}, time.Time{}},
		{"EscapedType", `{"type":"Probe\u0052esult","mode":"enforce","status":"fail","probe_name":"p","observed_at":"2026-05-16T01:00:00.5Z","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}`, []want{{"C1", "cis"}}, time.Time{}},
		{"OtherAgentEvent", `{"type":"Heartbeat","mode":5,"sub_results":"whatever"}`, nil, time.Time{}},
		{"NotAnObject", `["ProbeResult"]`, nil, time.Time{}},
	}
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _, db := setup(t, backend)
		for _, tc := range cases {
			res, err := log.Append(ctx, probe("web-1", "r-"+tc.name, tc.payload))
			require.NoError(t, err, tc.name)
			got, err := probefailures.NewStore(db).Failures(ctx, probefailures.FailureFilter{RolloutID: "r-" + tc.name})
			require.NoError(t, err)
			require.Len(t, got, len(tc.want), tc.name)
			obs := observed
			if !tc.obsTS.IsZero() {
				obs = tc.obsTS
			}
			for i, w := range tc.want {
				require.Equal(t, probefailures.Row{Seq: res.Event.Seq, RolloutID: "r-" + tc.name, HostID: "web-1",
					ProbeName: map[bool]string{true: "ssh-hardening", false: "p"}[tc.name == "EnforceFailMixed"],
					ControlID: w.control, Framework: w.framework, ObservedAt: obs}, got[i], tc.name)
			}
		}
		// Other kinds never reach the projection.
		_, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindPlanAction, HostID: "web-1", RolloutID: "r-plan", Payload: json.RawMessage(enforceFail)})
		require.NoError(t, err)
		got, err := probefailures.NewStore(db).Failures(ctx, probefailures.FailureFilter{RolloutID: "r-plan"})
		require.NoError(t, err)
		require.Empty(t, got)
	})
}

func TestMalformedIsRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, payload, host, field string
	}{
		{"MissingProbeName", `{"type":"ProbeResult","mode":"enforce","status":"fail","sub_results":[]}`, "h", "probe_name"},
		{"EmptyProbeName", `{"type":"ProbeResult","mode":"observe","probe_name":""}`, "h", "probe_name"},
		{"ProbeNameNotString", `{"type":"ProbeResult","probe_name":7}`, "h", "probe_name"},
		{"FailingSubWithoutControl", `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"p","sub_results":[{"framework":"cis","status":"pass"},{"framework":"cis","status":"fail"}]}`, "h", "sub_results[1].control_id"},
		{"FailingSubWithoutFramework", `{"type":"ProbeResult","mode":"observe","status":"fail","probe_name":"p","sub_results":[{"control_id":"C","status":"fail"}]}`, "h", "sub_results[0].framework"},
		{"ObservedAtNotRFC3339", `{"type":"ProbeResult","probe_name":"p","observed_at":"16/05/2026"}`, "h", "observed_at"},
		{"ObservedAtNotString", `{"type":"ProbeResult","probe_name":"p","observed_at":1747357200}`, "h", "observed_at"},
		{"SubResultsNotArray", `{"type":"ProbeResult","probe_name":"p","sub_results":{"control_id":"C"}}`, "h", "sub_results"},
		{"SubResultNotObject", `{"type":"ProbeResult","probe_name":"p","sub_results":["C"]}`, "h", "sub_results"},
		{"ModeNotString", `{"type":"ProbeResult","probe_name":"p","mode":1}`, "h", "mode"},
		{"SubStatusNotString", `{"type":"ProbeResult","probe_name":"p","sub_results":[{"status":true}]}`, "h", "sub_results[0].status"},
		{"NoHost", `{"type":"ProbeResult","probe_name":"p"}`, "", "host_id"},
	}
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _, db := setup(t, backend)
		_, err := log.Append(ctx, probe("web-1", "r1", enforceFail))
		require.NoError(t, err)
		for _, tc := range cases {
			for _, batch := range [][]eventlog.Entry{
				{probe(tc.host, "r1", tc.payload)},
				{probe("web-2", "r1", enforceFail), probe(tc.host, "r1", tc.payload)},
			} {
				_, err := log.AppendBatch(ctx, batch)
				require.ErrorIs(t, err, probefailures.ErrInvalidProbeResult, tc.name)
				var ve *probefailures.ValidationError
				require.ErrorAs(t, err, &ve, tc.name)
				require.Equal(t, tc.field, ve.Field, tc.name)
				var ae *projection.ApplyError
				require.ErrorAs(t, err, &ae)
				require.Equal(t, "probe_failures", ae.Projection)
				require.Contains(t, err.Error(), tc.field)
			}
			var events, failures int
			require.NoError(t, db.Get(&events, `SELECT COUNT(*) FROM event_log`))
			require.NoError(t, db.Get(&failures, `SELECT COUNT(*) FROM probe_failures`))
			require.Equal(t, 1, events, "%s: no event written", tc.name)
			require.Equal(t, 2, failures, "%s: no row written", tc.name)
		}
	})
}

// Contract 7 and exactly-once: every row points at its event; the event
// cannot be deleted; a retried event adds no rows.
func TestProvenance(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _, db := setup(t, backend)
		var last eventlog.Result
		for i := range 5 {
			e := probe(fmt.Sprint("web-", i), "r1", enforceFail)
			e.EventID = fmt.Sprint("agent/", i)
			res, err := log.Append(ctx, e)
			require.NoError(t, err)
			last = res
			again, err := log.Append(ctx, e) // the agent retries
			require.NoError(t, err)
			require.True(t, again.Duplicate)
		}
		got := rows(t, db)
		require.Len(t, got, 10, "two failing controls per event, once each")
		for _, r := range got {
			ev, err := log.Get(ctx, r.Seq)
			require.NoError(t, err)
			require.Equal(t, r.HostID, ev.HostID)
			require.Equal(t, r.RolloutID, ev.RolloutID)
		}
		var orphans int
		require.NoError(t, db.Get(&orphans, `SELECT COUNT(*) FROM probe_failures p LEFT JOIN event_log e ON e.seq = p.event_log_seq WHERE e.seq IS NULL`))
		require.Zero(t, orphans)

		_, err := db.Exec(db.Rebind(`DELETE FROM event_log WHERE seq = ?`), last.Event.Seq)
		require.Error(t, err, "append-only")
		_, err = db.Exec(`INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
VALUES (999999, 'r1', 'h', 'p', 'C', 'cis', '2026-05-16T01:00:00.000000Z')`)
		require.Error(t, err, "the foreign key refuses a row without its event")
	})
}

func TestRebuildEquivalence(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		projectiontest.RequireRebuildEquivalent(t, dbtest.New(t, backend).Open(t), probefailures.New(), Generate,
			&projectiontest.Options{Refused: func(err error) bool { return errors.Is(err, probefailures.ErrInvalidProbeResult) }})
	})
}

// Generate returns a random agent event: probe results of every mode and
// status, some malformed, and other agent events.
func Generate(r *rand.Rand) eventlog.Entry {
	host := fmt.Sprintf("web-%d", r.IntN(8))
	rollout := fmt.Sprintf("r-%d", r.IntN(3))
	if r.IntN(10) == 0 {
		return probe(host, rollout, `{"type":"Heartbeat"}`)
	}
	mode := []string{"enforce", "enforce", "observe"}[r.IntN(3)]
	status := []string{"fail", "fail", "pass"}[r.IntN(3)]
	var subs []string
	for i := range 1 + r.IntN(4) {
		st := []string{"fail", "pass"}[r.IntN(2)]
		subs = append(subs, fmt.Sprintf(`{"control_id":"C-%d","framework":"%s","status":"%s"}`, (i+r.IntN(3))%5, []string{"cis", "nist"}[r.IntN(2)], st))
	}
	if r.IntN(25) == 0 {
		subs = append(subs, `{"framework":"cis","status":"fail"}`) // malformed: refused
	}
	observed := ""
	if r.IntN(2) == 0 {
		observed = fmt.Sprintf(`,"observed_at":"2026-05-16T01:%02d:00Z"`, r.IntN(60))
	}
	return probe(host, rollout, fmt.Sprintf(`{"type":"ProbeResult","mode":"%s","status":"%s","probe_name":"probe-%d"%s,"sub_results":[%s]}`,
		mode, status, r.IntN(3), observed, join(subs)))
}

func join(parts []string) string { return strings.Join(parts, ",") }

// A poisoned event in the log (written behind canonlog's back) fails the
// rebuild — prepared on another goroutine while earlier pages are written —
// naming the event, and leaves the old view.
func TestRebuildStopsAtAPoisonedEvent(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, reg, db := setup(t, backend)
		var batch []eventlog.Entry
		for i := range 300 {
			batch = append(batch, probe(fmt.Sprint("web-", i%9), "r1", enforceFail))
		}
		_, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)
		_, err = db.Exec(db.Rebind(`INSERT INTO event_log (ts, kind, host_id, rollout_id, payload) VALUES (?, 'agent_event', 'web-1', 'r1', ?)`),
			"2026-05-16T01:00:00.000000Z", `{"type":"ProbeResult","mode":"enforce","status":"fail"}`)
		require.NoError(t, err)
		_, err = log.AppendBatch(ctx, batch[:50])
		require.NoError(t, err)
		before := rows(t, db)

		_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{BatchSize: 40})
		require.ErrorIs(t, err, probefailures.ErrInvalidProbeResult)
		var ae *projection.ApplyError
		require.ErrorAs(t, err, &ae)
		require.EqualValues(t, 301, ae.Seq)
		require.Equal(t, before, rows(t, db))
	})
}
