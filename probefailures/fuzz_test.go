package probefailures

import (
	"encoding/json"
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
		`{ "type" : "ProbeResult" , "mode" : "enforce" , "status" : "fail" , "probe_name" : "ssh" , "sub_results" : [ { "control_id" : "C1" , "framework" : "cis" , "status" : "fail" } ] }`,
		`{"type":"ProbeResult","mode":"enforce","status":"\u0066ail","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"fai\u006c"}]}`,
		`{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"ssh","sub_results":[{"control_id":"C1","framework":"cis","status":"pass"}]}`,
	} {
		f.Add([]byte(p), "host-1", "r-1", int64(42), true)
	}
	for _, p := range fastPathSeeds {
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
		// The fast path answers only when it gives the general decoder's
		// answer, which needs valid JSON.
		if fast, ok := rowsFast(append([]Row(nil), prefix...), ev); ok {
			if slowErr != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("rowsFast = %#v; the general decoder says %#v, %v", fast, slow, slowErr)
			}
			if !json.Valid(payload) {
				t.Fatalf("rowsFast answered for a payload that is not JSON")
			}
		}

		// PayloadMarkers is a promise rebuilds rely on: a payload holding
		// none of the markers derives no row.
		if len(rows) > len(prefix) && !containsAny(payload, New().PayloadMarkers()) {
			t.Fatalf("%d rows from a payload without a payload marker", len(rows)-len(prefix))
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

// FuzzScan: the fast path's scanner accepts exactly what json.Valid
// accepts, but for nesting deeper than it follows. Run it for real with
//
//	go test ./probefailures -run '^$' -fuzz '^FuzzScan$' -fuzztime 5m
func FuzzScan(f *testing.F) {
	for _, p := range fastPathSeeds {
		f.Add([]byte(p))
	}
	for _, p := range []string{``, ` `, `0`, `-0`, `-`, `01`, `1.`, `1.5e`, `1E+9`, `-1.25e-3`, `true`, `tru`, `nulll`, `"`, `"\`, `"\u"`,
		`"\uD83D\uDE00"`, `"\ud800"`, "\"\x7f\x80\"", "\"\x1f\"", `[]`, `[,]`, `[1,]`, `[1 2]`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{1:2}`,
		`{"a":{"b":[{"c":[]}]}}`, " \t\r\n[ 1 , { } ] \n", "[\v]", "[1]\x00", strings.Repeat(`[`, 1001) + strings.Repeat(`]`, 1001)} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		end := skipValue(p, skipSpace(p, 0), 0)
		scanned := end >= 0 && skipSpace(p, end) == len(p)
		if valid := json.Valid(p); scanned != valid && (scanned || depth(p) <= maxScanDepth) {
			t.Fatalf("the scanner says valid=%v, json.Valid says %v", scanned, valid)
		}
	})
}

// depth is how deeply the valid JSON p nests.
func depth(p []byte) int {
	d, most, inString := 0, 0, false
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			d++
			most = max(most, d)
		case c == ']' || c == '}':
			d--
		}
	}
	return most
}

// FuzzUnquote: the scanner accepts a string exactly when encoding/json
// does, and decodes it to the same Go string. Run it for real with
//
//	go test ./probefailures -run '^$' -fuzz '^FuzzUnquote$' -fuzztime 5m
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{``, `fail`, `f\u0061il`, `\"\\\/\b\f\n\r\t`, `\u00e9\u2014`, `\ud83d\ude00`, `\ud800`, `\udc00`,
		`\ud800\u0041`, `\ud800\ud800\udc00`, `\udbff\udfff`, `\ud800\\u0041`, `\ud800\`, `\u12`, `\x`, `\'`, "\xff", "\xc3(", "\xed\xa0\x80",
		"\xf0\x9f\x98", "é", "\x00", "\x1f", "a\"b", `ProbeResult`, `Probe\u0052esult`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		q := append(append([]byte{'"'}, s...), '"')
		end, flags := scanString(q, 0)
		if end != len(q) {
			if json.Valid(q) {
				t.Fatalf("the scanner refuses %q (end %d), encoding/json takes it", q, end)
			}
			return
		}
		var want string
		if err := json.Unmarshal(q, &want); err != nil {
			t.Fatalf("the scanner takes %q, encoding/json says %v", q, err)
		}
		if got := appendUnquoted(nil, s, flags); string(got) != want {
			t.Fatalf("%q decodes to %q, encoding/json says %q", q, got, want)
		}
		fld := field{start: 1, end: len(q) - 1, kind: kindString, flags: flags}
		for _, lit := range []string{"fail", "enforce", TypeProbeResult, want} {
			if got := fieldIs(q, fld, lit); got != (want == lit) {
				t.Fatalf("fieldIs(%q, %q) = %v", q, lit, got)
			}
		}
	})
}

// FuzzParseRFC3339: whatever parseRFC3339 accepts, time.Parse accepts
// too, as the same instant. Run it for real with
//
//	go test ./probefailures -run '^$' -fuzz '^FuzzParseRFC3339$' -fuzztime 5m
func FuzzParseRFC3339(f *testing.F) {
	for _, s := range []string{"2026-05-16T01:00:00Z", "2026-05-16T01:00:00.5Z", "2026-05-16T01:00:00.1234567891-07:30",
		"2024-02-29T23:59:59+23:59", "2026-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999-00:00",
		"2026-05-16T01:00:00,5Z", "2026-05-16T01:00:00.Z", "2026-05-16T24:00:00Z", "2026-05-16T01:00:60Z", "2026-05-16T01:00:00+24:00",
		"2026-05-16t01:00:00z", "2026-05-16T01:00:00+0200", "+026-05-16T01:00:00Z", "2026-5-16T01:00:00Z", "2026-05-16T01:00:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseRFC3339([]byte(s))
		if !ok {
			return
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("parseRFC3339(%q) = %v; time.Parse says %v", s, got, err)
		}
		if !got.Equal(want) || got.Location() != time.UTC || eventlog.NormalizeTime(got) != eventlog.NormalizeTime(want) {
			t.Fatalf("parseRFC3339(%q) = %v; time.Parse says %v", s, got, want)
		}
	})
}

// containsAny reports whether p holds one of the markers.
func containsAny(p []byte, markers []string) bool {
	for _, m := range markers {
		if strings.Contains(string(p), m) {
			return true
		}
	}
	return false
}
