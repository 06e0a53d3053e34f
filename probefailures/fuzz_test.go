package probefailures

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

// FuzzRows feeds Rows arbitrary payloads. Run it for real with
//
//	go test ./probefailures -run '^$' -fuzz '^FuzzRows$' -fuzztime 10m -parallel 1
func FuzzRows(f *testing.F) {
	for _, p := range []string{
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"},{"control_id":"C2","framework":"cis","status":"pass"}]}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","observed_at":"2026-05-16T01:00:00.1234567+02:00","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"},{"control_id":"C1","framework":"cis","status":"fail"},{"control_id":"C1","framework":"nist","status":"fail"}]}`,
		`{"type":"ProbeResult","mode":"observe","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"}]}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"},{"control_id":"","framework":"cis","status":"fail"}]}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail"},7]}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[null,{"control_id":"C1","framework":"cis","status":"fail"}]}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":{"control_id":"C1"}}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":null,"observed_at":null}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","observed_at":"yesterday"}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","observed_at":""}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":""}`,
		`{"type":"ProbeResult","mode":1,"probe_name":"ssh"}`,
		`{"type":"ProbeResult","status":["fail"],"probe_name":"ssh"}`,
		`{"type":"ProbeResult","probe_name":"ssh"}`,
		`{"type":"ProbeResult"}`,
		`{"type":"Probe\u0052esult","mode":"enforce","status":"fail","probe_name":"s\u0073h","sub_results":[{"control_id":"C\u00e9","framework":"cis","status":"f\u0061il"}]}`,
		`{"TYPE":"ProbeResult","MODE":"enforce","Status":"fail","probe_NAME":"ssh","SUB_RESULTS":[{"CONTROL_ID":"C1","FrameWork":"cis","status":"fail"}]}`,
		`{"type":"ProbeResult","type":"Other","probe_name":""}`,
		`{"type":"Other","type":"ProbeResult","probe_name":""}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fail","control_id":""}]}`,
		"{\"type\":\"ProbeResult\",\"mode\":\"enforce\",\"status\":\"fail\",\"probe_name\":\"\xff\",\"sub_results\":[{\"control_id\":\"\xfe\",\"framework\":\"cis\",\"status\":\"fail\"}]}",
		"{\"type\":\"ProbeResult\",\"mode\":\"enforce\",\"status\":\"fail\",\"probe_name\":\"\xff\",\"observed_at\":1}",
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[{"control_id":"\u0000","framework":"\ud800","status":"fail"}]}`,
		`{"type":"Other","mode":5,"sub_results":"x"}`,
		`{"type":7}`, `"ProbeResult"`, `["ProbeResult"]`, `{"\u0074ype":"ProbeResult","probe_name":""}`,
		`null`, ``, `{`, "\x00", `{"type":"ProbeResult",`, `{"type":"ProbeResult"}{}`,
		`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh","sub_results":[` + strings.Repeat(`[`, 2000) + `]}`,
	} {
		f.Add([]byte(p), "host-1", "r-1", int64(42), true)
	}
	f.Add([]byte(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh"}`), "", "", int64(1), true)
	f.Add([]byte(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":""}`), "h", "", int64(1), false)

	ts := time.Date(2026, 5, 16, 1, 0, 0, 123456000, time.UTC)
	prefix := []Row{{Seq: -1, ControlID: "keep", Framework: "keep"}}
	f.Fuzz(func(t *testing.T, payload []byte, host, rollout string, seq int64, agent bool) {
		kind := eventlog.KindAgentEvent
		if !agent {
			kind = eventlog.KindEffect
		}
		ev := eventlog.Event{Seq: seq, Kind: kind, TS: ts, HostID: host, RolloutID: rollout, Payload: payload}
		dst := append([]Row(nil), prefix...)
		rows, err := Rows(dst, ev)
		if !reflect.DeepEqual(rows[:min(len(rows), len(prefix))], prefix) || len(rows) < len(prefix) {
			t.Fatalf("Rows changed the rows it was given: %+v", rows)
		}
		if err != nil {
			var ve *ValidationError
			if !errors.Is(err, ErrInvalidProbeResult) || !errors.As(err, &ve) || ve.Field == "" || ve.Reason == "" {
				t.Fatalf("error %v: want a *ValidationError naming a field, wrapping ErrInvalidProbeResult", err)
			}
			if len(rows) != len(prefix) {
				t.Fatalf("error %v, yet %d rows appended", err, len(rows)-len(prefix))
			}
		}
		if !agent && (err != nil || len(rows) != len(prefix)) {
			t.Fatalf("an event of kind %s gave %d rows, error %v", kind, len(rows)-len(prefix), err)
		}

		// The general decoder decides alone what the fast paths decide.
		slow, slowErr := rowsSlow(append([]Row(nil), prefix...), ev)
		if agent && (fmt.Sprint(err) != fmt.Sprint(slowErr) || !reflect.DeepEqual(rows, slow)) {
			t.Fatalf("Rows = %#v, %v; the general decoder says %#v, %v", rows, err, slow, slowErr)
		}
		if fast, ok := rowsFast(append([]Row(nil), prefix...), ev); ok && agent && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("rowsFast = %#v; the general decoder says %#v, %v", fast, slow, slowErr)
		}

		type key struct{ framework, control string }
		seen := map[key]bool{}
		for _, r := range rows[len(prefix):] {
			switch {
			case r.ControlID == "" || r.Framework == "":
				t.Fatalf("row with an empty id: %+v", r)
			case r.Seq != seq || r.HostID != host || r.RolloutID != rollout || r.HostID == "" || r.ProbeName == "":
				t.Fatalf("row does not carry the event's seq, host, rollout and probe: %+v of %+v", r, ev)
			case seen[key{r.Framework, r.ControlID}]:
				t.Fatalf("(%s, %s) twice in one event", r.Framework, r.ControlID)
			case r.ObservedAt.Location() != time.UTC || r.ObservedAt.Nanosecond()%1000 != 0:
				t.Fatalf("observed_at %v is not a UTC time at microsecond precision", r.ObservedAt)
			}
			seen[key{r.Framework, r.ControlID}] = true
		}
	})
}
