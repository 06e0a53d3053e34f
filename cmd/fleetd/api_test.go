package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// maxPayload is the payload limit of the API tests, small enough to
// exceed cheaply.
const maxPayload = 4096

func TestAPI(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		f := setup(t, backend, app.Config{MaxPayloadBytes: maxPayload})
		c := newClient(t, f.handler)

		// count returns how many rows of table match where.
		count := func(t *testing.T, table, where string, args ...any) int {
			t.Helper()
			var n int
			require.NoError(t, f.db.GetContext(ctx, &n, f.db.Rebind(`SELECT COUNT(*) FROM `+table+` WHERE `+where), args...))
			return n
		}

		// The subtests share one service and run in order: each checks
		// what it wrote, or that it wrote nothing.
		t.Run("post_appends_an_agent_event", func(t *testing.T) {
			var got posted
			body := `{"host_id":"web-1","rollout_id":"r-1","event_id":"web-1/1","ts":"2026-05-16T00:59:00.123456789+02:00",` +
				`"payload":{"type":"Heartbeat", "uptime_s": 12}}`
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", body, &got))
			require.False(t, got.Duplicate)
			require.Positive(t, got.Seq)
			require.Equal(t, time.Date(2026, 5, 15, 22, 59, 0, 123456000, time.UTC), got.TS, "the agent's ts, stored at microsecond precision")

			ev, err := f.log.Get(ctx, got.Seq)
			require.NoError(t, err)
			require.Equal(t, "agent_event", string(ev.Kind))
			require.Equal(t, "web-1", ev.HostID)
			require.Equal(t, "r-1", ev.RolloutID)
			require.Equal(t, `{"type":"Heartbeat", "uptime_s": 12}`, string(ev.Payload), "the payload is stored byte for byte")

			var hosts hostsResponse
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-1/hosts", "", &hosts))
			require.Equal(t, []HostProgress{{HostID: "web-1", LastType: "Heartbeat", LastSeenAt: got.TS, Seq: got.Seq}}, hosts.Hosts,
				"fleetd's own projection saw it in the same transaction")
		})

		t.Run("retried_post_lands_once", func(t *testing.T) {
			body := probeBody("web-2", "r-1", "web-2/probe/1", "CIS-5.2.1", "CIS-5.2.2")
			var first, again posted
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", body, &first))
			require.Equal(t, t0, first.TS, "without ts the service's clock stamps it")
			require.Equal(t, http.StatusOK, c.do("POST", "/v1/agent-events", body, &again))
			require.True(t, again.Duplicate)
			require.Equal(t, first.Seq, again.Seq)
			require.Equal(t, first.TS, again.TS)

			require.Equal(t, 1, count(t, "event_log", "event_id = ?", "web-2/probe/1"))
			require.Equal(t, 2, count(t, "probe_failures", "host_id = ?", "web-2"), "the retry added no second set of rows")
			require.Equal(t, first.Seq, lastSeq(t, f.log))
		})

		t.Run("concurrent_retries_land_once", func(t *testing.T) {
			body := probeBody("web-3", "r-1", "web-3/probe/1", "CIS-5.2.1")
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				created int
				seqs    = map[int64]bool{}
			)
			for range 8 {
				wg.Go(func() {
					var got posted
					status := c.do("POST", "/v1/agent-events", body, &got)
					mu.Lock()
					defer mu.Unlock()
					if status == http.StatusCreated {
						created++
					} else {
						require.Equal(t, http.StatusOK, status, got.Error)
					}
					seqs[got.Seq] = true
				})
			}
			wg.Wait()
			require.Equal(t, 1, created)
			require.Len(t, seqs, 1)
			require.Equal(t, 1, count(t, "event_log", "event_id = ?", "web-3/probe/1"))
			require.Equal(t, 1, count(t, "probe_failures", "host_id = ?", "web-3"))
		})

		t.Run("malformed_body_is_refused_and_nothing_written", func(t *testing.T) {
			before := lastSeq(t, f.log)
			for name, tc := range map[string]struct{ body, want, field string }{
				"not_json":           {body: `{"host_id":"web-9",`, want: "not valid JSON"},
				"bad_syntax":         {body: `{"host_id" "web-9"}`, want: "not valid JSON"},
				"empty":              {body: ``, want: "empty body"},
				"not_an_object":      {body: `["web-9"]`, want: "not a JSON object"},
				"unknown_field":      {body: `{"hostid":"web-9","event_id":"x","payload":{}}`, want: `unknown field "hostid"`},
				"no_host_id":         {body: `{"event_id":"x","payload":{}}`, want: "host_id is required", field: "host_id"},
				"no_event_id":        {body: `{"host_id":"web-9","payload":{}}`, want: "event_id is required", field: "event_id"},
				"no_payload":         {body: `{"host_id":"web-9","event_id":"x"}`, want: `"payload" is required`, field: "payload"},
				"null_payload":       {body: `{"host_id":"web-9","event_id":"x","payload":null}`, want: "payload must be a JSON object", field: "payload"},
				"payload_not_object": {body: `{"host_id":"web-9","event_id":"x","payload":"hello"}`, want: "payload must be a JSON object", field: "payload"},
				"host_id_not_string": {body: `{"host_id":9,"event_id":"x","payload":{}}`, want: `field "host_id" must be a string, not a number`, field: "host_id"},
				"host_id_null":       {body: `{"host_id":null,"event_id":"x","payload":{}}`, want: `field "host_id" must be a string, not null`, field: "host_id"},
				"bad_ts":             {body: `{"host_id":"web-9","event_id":"x","ts":"yesterday","payload":{}}`, want: "RFC 3339", field: "ts"},
				"two_objects":        {body: `{"host_id":"web-9","event_id":"x","payload":{}} {}`, want: "more than one JSON value"},
				"nul_in_payload":     {body: `{"host_id":"web-9","event_id":"x","payload":{"a":"\u0000"}}`, want: "NUL", field: "payload"},
				"host_id_too_long":   {body: `{"host_id":"` + strings.Repeat("h", 513) + `","event_id":"x","payload":{}}`, want: "at most 512", field: "host_id"},
				"ts_out_of_range":    {body: `{"host_id":"web-9","event_id":"x","ts":"0000-01-01T00:00:00Z","payload":{}}`, want: "outside years", field: "ts"},
				"kind_not_settable":  {body: `{"host_id":"web-9","event_id":"x","payload":{}, "kind":"effect"}`, want: `unknown field "kind"`},

				// What encoding/json would store substituted (U+FFFD for
				// the text, the clock's now for the zero ts, the last of
				// repeated keys, a key of another case) is refused.
				"host_id_not_utf8":         {body: "{\"host_id\":\"web-9\xff\",\"event_id\":\"x\",\"payload\":{}}", want: `field "host_id" is not valid UTF-8 (byte 0xff) at byte 18: it cannot be stored as given`, field: "host_id"},
				"rollout_id_not_utf8":      {body: "{\"host_id\":\"web-9\",\"rollout_id\":\"r\xc3\",\"event_id\":\"x\",\"payload\":{}}", want: "cannot be stored as given", field: "rollout_id"},
				"event_id_not_utf8":        {body: "{\"host_id\":\"web-9\",\"event_id\":\"\xed\xa0\x80\",\"payload\":{}}", want: "cannot be stored as given", field: "event_id"},
				"ts_not_utf8":              {body: "{\"host_id\":\"web-9\",\"event_id\":\"x\",\"ts\":\"2026-05-16T01:00:00Z\xff\",\"payload\":{}}", want: "cannot be stored as given", field: "ts"},
				"host_id_lone_surrogate":   {body: `{"host_id":"web-9\ud800","event_id":"x","payload":{}}`, want: `field "host_id" holds the lone surrogate escape \ud800`, field: "host_id"},
				"rollout_id_lone_low_half": {body: `{"host_id":"web-9","rollout_id":"\udc00r","event_id":"x","payload":{}}`, want: `lone surrogate escape \udc00`, field: "rollout_id"},
				"event_id_lone_surrogate":  {body: `{"host_id":"web-9","event_id":"x\ud83d\u0041","payload":{}}`, want: `lone surrogate escape \ud83d`, field: "event_id"},
				"ts_zero":                  {body: `{"host_id":"web-9","event_id":"x","ts":"0001-01-01T00:00:00Z","payload":{}}`, want: "is the zero time", field: "ts"},
				"ts_zero_other_zone":       {body: `{"host_id":"web-9","event_id":"x","ts":"0001-01-01T01:00:00+01:00","payload":{}}`, want: "is the zero time", field: "ts"},
				"ts_empty":                 {body: `{"host_id":"web-9","event_id":"x","ts":"","payload":{}}`, want: `ts "" is not an RFC 3339 time`, field: "ts"},
				"host_id_twice":            {body: `{"host_id":"web-9","host_id":"web-9b","event_id":"x","payload":{}}`, want: `field "host_id" given twice`, field: "host_id"},
				"payload_twice":            {body: `{"host_id":"web-9","event_id":"x","payload":{"type":"A"},"payload":{"type":"B"}}`, want: `field "payload" given twice`, field: "payload"},
				"key_upper_case":           {body: `{"HOST_ID":"web-9","event_id":"x","payload":{}}`, want: `unknown field "HOST_ID": field names are case-sensitive (did you mean "host_id"?)`},
				"key_mixed_case":           {body: `{"host_id":"web-9","Event_Id":"x","payload":{}}`, want: `unknown field "Event_Id"`},
				"key_not_utf8":             {body: "{\"host_id\xff\":\"web-9\",\"event_id\":\"x\",\"payload\":{}}", want: "a field name is not valid UTF-8"},
			} {
				t.Run(name, func(t *testing.T) {
					var got posted
					require.Equal(t, http.StatusBadRequest, c.do("POST", "/v1/agent-events", tc.body, &got), got.Error)
					require.Contains(t, got.Error, tc.want)
					require.Equal(t, tc.field, got.Field)
				})
			}
			require.Equal(t, before, lastSeq(t, f.log), "nothing was written")
			require.Zero(t, count(t, "rollout_progress", "host_id = ?", "web-9"))
		})

		t.Run("malformed_probe_result_is_refused_and_nothing_written", func(t *testing.T) {
			before := lastSeq(t, f.log)
			for name, tc := range map[string]struct{ payload, field string }{
				"no_probe_name":  {payload: `{"type":"ProbeResult","mode":"enforce","status":"fail","sub_results":[]}`, field: "payload.probe_name"},
				"no_control_id":  {payload: `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"framework":"cis","status":"fail"}]}`, field: "payload.sub_results[0].control_id"},
				"no_framework":   {payload: `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","status":"fail"}]}`, field: "payload.sub_results[0].framework"},
				"bad_observedat": {payload: `{"type":"ProbeResult","mode":"observe","status":"pass","probe_name":"ssh","observed_at":"soon"}`, field: "payload.observed_at"},
			} {
				t.Run(name, func(t *testing.T) {
					var got posted
					body := `{"host_id":"web-8","rollout_id":"r-1","event_id":"web-8/` + name + `","payload":` + tc.payload + `}`
					require.Equal(t, http.StatusUnprocessableEntity, c.do("POST", "/v1/agent-events", body, &got), got.Error)
					require.Equal(t, tc.field, got.Field)
					require.Contains(t, got.Error, "malformed probe result: "+tc.field)
					require.Contains(t, got.Error, "nothing was stored")
				})
			}
			require.Equal(t, before, lastSeq(t, f.log), "nothing was written")
			require.Zero(t, count(t, "rollout_progress", "host_id = ?", "web-8"), "nor applied to any projection")
		})

		t.Run("event_id_reused_for_another_event", func(t *testing.T) {
			before := lastSeq(t, f.log)
			var got posted
			body := `{"host_id":"web-2","rollout_id":"r-1","event_id":"web-2/probe/1","payload":{"type":"Heartbeat"}}`
			require.Equal(t, http.StatusConflict, c.do("POST", "/v1/agent-events", body, &got))
			require.Contains(t, got.Error, `event_id "web-2/probe/1" already belongs to event`)
			require.Equal(t, "payload", got.Field)
			require.Positive(t, got.Seq)
			// The same id as given by the host's own agent, without its
			// namespace, is the same event.
			body = `{"host_id":"web-2","rollout_id":"r-1","event_id":"probe/1","payload":{"type":"Heartbeat"}}`
			require.Equal(t, http.StatusConflict, c.do("POST", "/v1/agent-events", body, &got))
			require.Contains(t, got.Error, `event_id "probe/1" already belongs to event`)
			require.Equal(t, before, lastSeq(t, f.log))
		})

		t.Run("payload_too_large", func(t *testing.T) {
			before := lastSeq(t, f.log)
			var got posted
			big := `{"host_id":"web-7","event_id":"big","payload":{"blob":"` + strings.Repeat("x", maxPayload) + `"}}`
			require.Equal(t, http.StatusRequestEntityTooLarge, c.do("POST", "/v1/agent-events", big, &got))
			require.Equal(t, "payload", got.Field)
			huge := `{"host_id":"web-7","event_id":"huge","payload":{"blob":"` + strings.Repeat("x", maxPayload+bodyOverhead) + `"}}`
			require.Equal(t, http.StatusRequestEntityTooLarge, c.do("POST", "/v1/agent-events", huge, &got))
			require.Contains(t, got.Error, "payloads are limited to 4096 bytes")
			require.Equal(t, before, lastSeq(t, f.log))
		})

		t.Run("failing_hosts", func(t *testing.T) {
			for i, body := range []string{
				probeBody("web-4", "r-2", "web-4/1", "CIS-5.2.1"),
				probeBody("web-5", "r-2", "web-5/1", "CIS-5.2.1", "CIS-5.2.2"),
				probeBody("web-6", "r-3", "web-6/1", "CIS-5.2.1"), // another rollout
			} {
				require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", body, nil), i)
			}
			var got failingHostsResponse
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-2/failing-hosts?control=CIS-5.2.1", "", &got))
			require.Equal(t, failingHostsResponse{RolloutID: "r-2", ControlID: "CIS-5.2.1", Hosts: []string{"web-4", "web-5"}}, got)
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-2/failing-hosts?control=CIS-9", "", &got))
			require.Equal(t, []string{}, got.Hosts)
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-1/failing-hosts?control=CIS-5.2.1", "", &got))
			require.Equal(t, []string{"web-2", "web-3"}, got.Hosts)

			var bad posted
			require.Equal(t, http.StatusBadRequest, c.do("GET", "/v1/rollouts/r-2/failing-hosts", "", &bad))
			require.Equal(t, "control", bad.Field)
		})

		t.Run("summary", func(t *testing.T) {
			var got summaryResponse
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-2/summary", "", &got))
			require.Equal(t, summaryResponse{RolloutID: "r-2", FailingHosts: 2, Controls: []controlSummary{
				{ControlID: "CIS-5.2.1", Framework: "cis", FailingHosts: 2},
				{ControlID: "CIS-5.2.2", Framework: "cis", FailingHosts: 1},
			}, Seq: lastSeq(t, f.log)}, got)

			var bad posted
			require.Equal(t, http.StatusBadRequest, c.do("GET", "/v1/rollouts/r%00/summary", "", &bad))
			require.Contains(t, bad.Error, "NUL")
		})

		t.Run("hosts_paginate", func(t *testing.T) {
			var got hostsResponse
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-1/hosts?limit=2", "", &got))
			require.Len(t, got.Hosts, 2)
			require.Equal(t, []string{"web-1", "web-2"}, []string{got.Hosts[0].HostID, got.Hosts[1].HostID})
			require.Equal(t, "ProbeResult", got.Hosts[1].LastType)
			require.Equal(t, "fail", got.Hosts[1].LastStatus)
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-1/hosts?after=web-2", "", &got))
			require.Len(t, got.Hosts, 1)
			require.Equal(t, "web-3", got.Hosts[0].HostID)

			var bad posted
			require.Equal(t, http.StatusBadRequest, c.do("GET", "/v1/rollouts/r-1/hosts?limit=lots", "", &bad))
			require.Equal(t, http.StatusBadRequest, c.do("GET", "/v1/rollouts/r-1/hosts?limit=100000", "", &bad))
		})

		t.Run("healthz", func(t *testing.T) {
			var got map[string]string
			require.Equal(t, http.StatusOK, c.do("GET", "/healthz", "", &got))
			require.Equal(t, "ok", got["status"])
		})
	})
}
