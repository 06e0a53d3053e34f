package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/probefailures"
)

// decisionBody is a POST body deciding on the summary read at readSeq.
func decisionBody(eventID, decision string, readSeq int64) string {
	return fmt.Sprintf(`{"event_id":%q,"decision":%q,"read_seq":%d}`, eventID, decision, readSeq)
}

// passBody is a POST body reporting an enforce-mode probe that passes.
func passBody(host, rollout, eventID string) string {
	return `{"host_id":"` + host + `","rollout_id":"` + rollout + `","event_id":"` + eventID + `",` +
		`"payload":{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"ssh-hardening","sub_results":[{"control_id":"CIS-5.2.1","framework":"cis","status":"pass"}]}}`
}

// readSummary reads a rollout's summary.
func (c *client) readSummary(rollout string) summaryResponse {
	c.t.Helper()
	var got summaryResponse
	require.Equal(c.t, http.StatusOK, c.do("GET", "/v1/rollouts/"+rollout+"/summary", "", &got))
	return got
}

func TestGateDecisions(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		f := setup(t, backend, app.Config{MaxPayloadBytes: maxPayload})
		c := newClient(t, f.handler)
		require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", probeBody("web-1", "r-1", "web-1/1", "CIS-5.2.1"), nil))

		// decisions returns the rollout's stored gate decisions.
		decisions := func(t *testing.T, rollout string) []eventlog.Event {
			t.Helper()
			evs, err := f.log.Query(ctx, eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindGateDecision}, RolloutID: rollout})
			require.NoError(t, err)
			return evs
		}

		// The subtests share one service and run in order.
		t.Run("decision_on_the_summary_lands", func(t *testing.T) {
			s := c.readSummary("r-1")
			require.Equal(t, lastSeq(t, f.log), s.Seq, "the summary is complete up to the log's head")
			require.Equal(t, 1, s.FailingHosts)

			var got posted
			body := `{"event_id":"gate/1","decision":"halt","read_seq":` + fmt.Sprint(s.Seq) + `,"reason":"CIS-5.2.1 fails on web-1 & web-4 <again>"}`
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/rollouts/r-1/gate-decisions", body, &got), got.Error)
			require.False(t, got.Duplicate)
			ev, err := f.log.Get(ctx, got.Seq)
			require.NoError(t, err)
			require.Equal(t, eventlog.KindGateDecision, ev.Kind)
			require.Equal(t, "r-1", ev.RolloutID)
			require.Empty(t, ev.HostID)
			require.Equal(t, "gate:gate/1", ev.EventID, "in the gate decisions' namespace")
			require.Equal(t, `{"decision":"halt","read_seq":`+fmt.Sprint(s.Seq)+`,"reason":"CIS-5.2.1 fails on web-1 & web-4 <again>"}`, string(ev.Payload), "the reason as written")

			var again posted
			require.Equal(t, http.StatusOK, c.do("POST", "/v1/rollouts/r-1/gate-decisions", body, &again), again.Error)
			require.True(t, again.Duplicate)
			require.Equal(t, got.Seq, again.Seq)
			require.Len(t, decisions(t, "r-1"), 1)
		})

		t.Run("a_failure_after_the_read_is_a_conflict", func(t *testing.T) {
			s := c.readSummary("r-1")
			var failure posted
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", probeBody("web-2", "r-1", "web-2/1", "CIS-5.2.2"), &failure))
			before := lastSeq(t, f.log)

			var got posted
			require.Equal(t, http.StatusConflict, c.do("POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("gate/2", "advance", s.Seq), &got))
			require.Equal(t, "read_seq", got.Field)
			require.Equal(t, failure.Seq, got.Seq, "names the failure")
			require.Contains(t, got.Error, fmt.Sprintf("event %d", failure.Seq))
			require.Contains(t, got.Error, "read the summary again (GET /v1/rollouts/r-1/summary)")
			require.Equal(t, before, lastSeq(t, f.log), "nothing was written")
			require.Len(t, decisions(t, "r-1"), 1)

			// Read again, decide again: it lands, and a retry of it with the
			// stale read_seq is answered as the original.
			s2 := c.readSummary("r-1")
			require.Equal(t, 2, s2.FailingHosts)
			require.GreaterOrEqual(t, s2.Seq, failure.Seq)
			var landed, retried posted
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("gate/2", "halt", s2.Seq), &landed), landed.Error)
			require.Equal(t, http.StatusOK, c.do("POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("gate/2", "halt", s2.Seq), &retried), retried.Error)
			require.True(t, retried.Duplicate)
			require.Equal(t, landed.Seq, retried.Seq)
		})

		t.Run("other_events_after_the_read_leave_it_standing", func(t *testing.T) {
			s := c.readSummary("r-1")
			for _, e := range []struct{ what, body string }{
				{"a passing result", passBody("web-1", "r-1", "web-1/2")},
				{"a failure of another rollout", probeBody("web-3", "r-2", "web-3/1", "CIS-5.2.1")},
				{"a heartbeat", `{"host_id":"web-1","rollout_id":"r-1","event_id":"web-1/3","payload":{"type":"Heartbeat"}}`},
				{"another agent event", `{"host_id":"web-1","rollout_id":"r-1","event_id":"web-1/4","payload":{"type":"ApplyReport","ok":1}}`},
			} {
				require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", e.body, nil), e.what)
			}
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/rollouts/r-2/gate-decisions", decisionBody("gate/r-2", "halt", lastSeq(t, f.log)), nil),
				"a decision on another rollout")
			var got posted
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("gate/3", "advance", s.Seq), &got), got.Error)
		})

		t.Run("event_id_reused_for_another_decision", func(t *testing.T) {
			before := lastSeq(t, f.log)
			var got posted
			require.Equal(t, http.StatusConflict, c.do("POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("gate/3", "halt", before), &got))
			require.Contains(t, got.Error, `event_id "gate/3" already belongs to event`)
			require.Positive(t, got.Seq)
			require.Equal(t, before, lastSeq(t, f.log))
		})

		t.Run("malformed_body_is_refused_and_nothing_written", func(t *testing.T) {
			before := lastSeq(t, f.log)
			past := fmt.Sprint(before + 1)
			for name, tc := range map[string]struct {
				path, body, want, field string
				status                  int
			}{
				"empty":                {body: ``, want: "empty body"},
				"not_json":             {body: `{"event_id":`, want: "not valid JSON"},
				"not_an_object":        {body: `[1]`, want: "a gate decision is one object with the fields event_id, decision, read_seq, reason"},
				"two_objects":          {body: `{} {}`, want: "more than one JSON value"},
				"unknown_field":        {body: `{"event_id":"x","decision":"halt","read_seq":1,"wave":2}`, want: `unknown field "wave"`},
				"key_case":             {body: `{"Event_ID":"x","decision":"halt","read_seq":1}`, want: `did you mean "event_id"?`},
				"field_twice":          {body: `{"event_id":"x","decision":"halt","decision":"advance","read_seq":1}`, want: "given twice", field: "decision"},
				"no_event_id":          {body: `{"decision":"halt","read_seq":1}`, want: "event_id is required", field: "event_id"},
				"empty_event_id":       {body: `{"event_id":"","decision":"halt","read_seq":1}`, want: "event_id is required", field: "event_id"},
				"event_id_not_string":  {body: `{"event_id":7,"decision":"halt","read_seq":1}`, want: "must be a string", field: "event_id"},
				"event_id_surrogate":   {body: `{"event_id":"x\ud800","decision":"halt","read_seq":1}`, want: "lone surrogate", field: "event_id"},
				"event_id_too_long":    {body: decisionBody(strings.Repeat("e", 513), "halt", 1), want: "at most 512", field: "event_id"},
				"no_decision":          {body: `{"event_id":"x","read_seq":1}`, want: `decision is required: "advance" or "halt"`, field: "decision"},
				"unknown_decision":     {body: decisionBody("x", "Advance", 1), want: `decision "Advance" is not "advance" or "halt"`, field: "decision"},
				"no_read_seq":          {body: `{"event_id":"x","decision":"halt"}`, want: "read_seq is required", field: "read_seq"},
				"null_read_seq":        {body: `{"event_id":"x","decision":"halt","read_seq":null}`, want: "must be a number", field: "read_seq"},
				"read_seq_string":      {body: `{"event_id":"x","decision":"halt","read_seq":"1"}`, want: "must be a number", field: "read_seq"},
				"read_seq_fraction":    {body: `{"event_id":"x","decision":"halt","read_seq":1.5}`, want: "is not a seq", field: "read_seq"},
				"read_seq_exponent":    {body: `{"event_id":"x","decision":"halt","read_seq":1e2}`, want: "is not a seq", field: "read_seq"},
				"read_seq_negative":    {body: decisionBody("x", "halt", -1), want: "negative", field: "read_seq"},
				"read_seq_past_head":   {body: `{"event_id":"x","decision":"halt","read_seq":` + past + `}`, want: "past the log's last event", field: "read_seq"},
				"reason_not_string":    {body: `{"event_id":"x","decision":"halt","read_seq":1,"reason":5}`, want: "must be a string", field: "reason"},
				"reason_nul":           {body: `{"event_id":"x","decision":"halt","read_seq":1,"reason":"a\u0000b"}`, want: "NUL", field: "reason"},
				"reason_too_large":     {body: `{"event_id":"x","decision":"halt","read_seq":1,"reason":"` + strings.Repeat("r", maxPayload) + `"}`, want: "payload too large", field: "reason", status: http.StatusRequestEntityTooLarge},
				"rollout_id_nul":       {path: "/v1/rollouts/r%00/gate-decisions", body: decisionBody("x", "halt", 1), want: "NUL", field: "rollout_id"},
				"rollout_id_too_long":  {path: "/v1/rollouts/" + strings.Repeat("r", 513) + "/gate-decisions", body: decisionBody("x", "halt", 1), want: "at most 512", field: "rollout_id"},
				"rollout_id_not_utf8":  {path: "/v1/rollouts/r%ff/gate-decisions", body: decisionBody("x", "halt", 1), want: "UTF-8", field: "rollout_id"},
				"body_larger_than_any": {body: `{"event_id":"x","reason":"` + strings.Repeat("r", maxPayload+bodyOverhead) + `"}`, want: "body larger than", status: http.StatusRequestEntityTooLarge},
			} {
				t.Run(name, func(t *testing.T) {
					if tc.path == "" {
						tc.path = "/v1/rollouts/r-1/gate-decisions"
					}
					if tc.status == 0 {
						tc.status = http.StatusBadRequest
					}
					var got posted
					require.Equal(t, tc.status, c.do("POST", tc.path, tc.body, &got), got.Error)
					require.Contains(t, got.Error, tc.want)
					require.Equal(t, tc.field, got.Field)
				})
			}
			require.Equal(t, before, lastSeq(t, f.log), "nothing was written")
		})
	})
}

// TestGateDecisionRace: clients read a rollout's summary and then, all at
// once, report failures of the rollout or post a decision on what they
// read. Whatever the interleaving, the log holds no accepted decision
// with a probe failure of its rollout between its read_seq and its own
// seq, and every refusal names such a failure.
func TestGateDecisionRace(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		f := setup(t, backend, app.Config{})
		c := newClient(t, f.handler)
		rollouts := []string{"r-a", "r-b"}

		type refusal struct {
			rollout      string
			readSeq, seq int64
		}
		var (
			mu       sync.Mutex
			accepted int
			refused  []refusal
			wg       sync.WaitGroup
		)
		const clients, rounds = 8, 6
		for i := range clients {
			rollout := rollouts[i%len(rollouts)]
			wg.Go(func() {
				for round := range rounds {
					s := c.readSummary(rollout)
					if i%4 < 2 { // half the clients report failures
						body := probeBody(fmt.Sprintf("web-%d", i), rollout, fmt.Sprintf("web-%d/%d", i, round), fmt.Sprintf("CIS-%d", round))
						require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", body, nil))
						continue
					}
					var got posted
					status := c.do("POST", "/v1/rollouts/"+rollout+"/gate-decisions", decisionBody(fmt.Sprintf("gate/%d/%d", i, round), "advance", s.Seq), &got)
					mu.Lock()
					switch status {
					case http.StatusCreated:
						accepted++
					case http.StatusConflict:
						require.Equal(t, "read_seq", got.Field, got.Error)
						refused = append(refused, refusal{rollout, s.Seq, got.Seq})
					default:
						t.Errorf("decision answered %d: %s", status, got.Error)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		require.Equal(t, clients/2*rounds, accepted+len(refused))
		t.Logf("%d decisions accepted, %d refused", accepted, len(refused))

		// After the race a fresh read decides.
		for _, r := range rollouts {
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/rollouts/"+r+"/gate-decisions", decisionBody("gate/final/"+r, "halt", c.readSummary(r).Seq), nil))
			accepted++
		}

		// From the log alone.
		decisions, err := f.log.Query(ctx, eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindGateDecision}})
		require.NoError(t, err)
		require.Len(t, decisions, accepted)
		for _, d := range decisions {
			var p struct {
				ReadSeq *int64 `json:"read_seq"`
			}
			require.NoError(t, json.Unmarshal(d.Payload, &p))
			require.NotNil(t, p.ReadSeq)
			require.Less(t, *p.ReadSeq, d.Seq)
			m := probefailures.FailureMatch(d.RolloutID)
			m.AfterSeq, m.Limit = *p.ReadSeq, 1
			next, err := f.log.Query(ctx, m)
			require.NoError(t, err)
			if len(next) > 0 {
				require.Greater(t, next[0].Seq, d.Seq, "decision %d read up to %d; failure %d of %s lies between", d.Seq, *p.ReadSeq, next[0].Seq, d.RolloutID)
			}
		}
		for _, r := range refused {
			ev, err := f.log.Get(ctx, r.seq)
			require.NoError(t, err)
			require.Greater(t, r.seq, r.readSeq)
			require.Equal(t, eventlog.KindAgentEvent, ev.Kind)
			require.Equal(t, r.rollout, ev.RolloutID)
		}
	})
}
