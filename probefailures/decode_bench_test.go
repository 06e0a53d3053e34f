package probefailures_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
)

// The agent events of a fleet, as a rebuild of probe_failures reads them
// (its kind filter leaves only agent events): 85% probe results — a tenth
// in observe mode, a fifth failing — and 15% heartbeats and other agent
// events. Some producers pretty-print (`", "` and `": "` separators, as
// Python's json.dumps does), some escape non-ASCII (`\u00e4`), and some
// probe results carry a free-text detail with quotes, newlines and paths.
var decodeProbes = []struct {
	name, framework string
	controls        []string
}{
	{"ssh-hardening", "cis", []string{"CIS-5.2.1", "CIS-5.2.2", "CIS-5.2.3", "CIS-5.2.4"}},
	{"filesystem", "cis", []string{"CIS-1.1.1", "CIS-1.1.2", "CIS-1.1.3"}},
	{"audit-logging", "nist", []string{"AU-2", "AU-3", "AU-12"}},
	{"kernel-params", "stig", []string{"V-230266", "V-230267"}},
	{`pam-h\u00e4rtung`, "bsi", []string{`SYS.1.3.A2`, `SYS.1.3.A4`}},
}

const decodeDetail = `"sshd_config: \"PermitRootLogin yes\" at line 42\n\texpected \"no\" (see \/etc\/ssh\/sshd_config.d\/10-cis.conf) \u2014 remediation queued"`

// decodeEvent returns agent event i of the benchmark's mix. shape picks
// one kind of event only: "probe-pass", "probe-fail", "escaped",
// "heartbeat"; "" draws from the mix.
func decodeEvent(i int, shape string) eventlog.Event {
	r := rand.New(rand.NewPCG(uint64(i), 0x70726f6265))
	ts := time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 100 * time.Millisecond)
	ev := eventlog.Event{Seq: int64(i + 1), Kind: eventlog.KindAgentEvent, TS: ts,
		HostID: fmt.Sprintf("host-%05d", 1+r.IntN(2000)), RolloutID: fmt.Sprintf("rollout-%d", 1+r.IntN(40))}
	sep, colon := ",", ":"
	if r.IntN(5) == 0 {
		sep, colon = ", ", ": "
	}
	kv := func(k, v string) string { return `"` + k + `"` + colon + v }
	q := func(s string) string { return `"` + s + `"` }

	x := r.IntN(100)
	switch shape {
	case "probe-pass", "probe-fail", "escaped":
		x = 0
	case "heartbeat":
		x = 90
	}
	if x >= 85 {
		var fields []string
		switch y := r.IntN(3); {
		case y < 2:
			fields = []string{kv("type", q("Heartbeat")), kv("uptime_s", fmt.Sprint(r.IntN(1_000_000))), kv("agent_version", q("2.4.1"))}
			if r.IntN(3) == 0 {
				fields = append(fields, kv("site", q(`M\u00fcnchen-Ost`)))
			}
		default:
			fields = []string{kv("type", q("AgentRestarted")), kv("reason", q("config change")), kv("previous", `{"pid":`+fmt.Sprint(r.IntN(65536))+`,"exit":0}`)}
		}
		ev.Payload = []byte("{" + strings.Join(fields, sep) + "}")
		return ev
	}

	def := decodeProbes[r.IntN(len(decodeProbes)-1)]
	escaped := r.IntN(20) == 0 || shape == "escaped"
	if escaped {
		def = decodeProbes[len(decodeProbes)-1]
	}
	mode, status := "enforce", "pass"
	if r.IntN(10) == 0 {
		mode = "observe"
	}
	failing := r.IntN(5) == 0
	switch shape {
	case "probe-pass":
		mode, failing = "enforce", false
	case "probe-fail", "escaped":
		mode, failing = "enforce", true
	}
	mustFail := -1
	if failing {
		status = "fail"
		mustFail = r.IntN(len(def.controls))
	}
	fields := []string{kv("type", q("ProbeResult")), kv("mode", q(mode)), kv("status", q(status)), kv("probe_name", q(def.name))}
	observed := ts.Add(-time.Duration(r.IntN(60_000)) * time.Millisecond)
	switch y := r.IntN(10); {
	case y < 6:
		fields = append(fields, kv("observed_at", q(observed.Format(time.RFC3339))))
	case y < 9:
		fields = append(fields, kv("observed_at", q(observed.Format(time.RFC3339Nano))))
	}
	subs := make([]string, len(def.controls))
	for j, c := range def.controls {
		st := "pass"
		if failing && (j == mustFail || r.IntN(4) == 0) {
			st = "fail"
		}
		subs[j] = "{" + strings.Join([]string{kv("control_id", q(c)), kv("framework", q(def.framework)), kv("status", q(st))}, sep) + "}"
	}
	fields = append(fields, kv("sub_results", "["+strings.Join(subs, sep)+"]"))
	if escaped || r.IntN(10) == 0 {
		fields = append(fields, kv("detail", decodeDetail))
	}
	ev.Payload = []byte("{" + strings.Join(fields, sep) + "}")
	return ev
}

func decodeEvents(n int, shape string) []eventlog.Event {
	evs := make([]eventlog.Event, n)
	for i := range evs {
		evs[i] = decodeEvent(i, shape)
	}
	return evs
}

// BenchmarkRows derives the rows of one agent event per op: "mix" draws
// from the fleet's mix, the others from one kind of event. Reproduce with
//
//	go test ./probefailures -run '^$' -bench '^BenchmarkRows$' -benchmem -count 5
func BenchmarkRows(b *testing.B) {
	for _, shape := range []string{"mix", "probe-pass", "probe-fail", "escaped", "heartbeat"} {
		b.Run(shape, func(b *testing.B) {
			evs := decodeEvents(4096, strings.TrimPrefix(shape, "mix"))
			var rows []probefailures.Row
			var err error
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if rows, err = probefailures.Rows(rows[:0], evs[i%len(evs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkPrepareBatch derives the rows of 1,000 agent events of the mix
// per op, as a rebuild does for each page, and reports the cost per event.
func BenchmarkPrepareBatch(b *testing.B) {
	evs := decodeEvents(1000, "")
	p := probefailures.New()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n := 0
	for b.Loop() {
		if _, err := p.PrepareBatch(evs); err != nil {
			b.Fatal(err)
		}
		n++
	}
	runtime.ReadMemStats(&after)
	events := float64(n * len(evs))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/events, "allocs/event")
}
