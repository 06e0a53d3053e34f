package bench

import (
	"strconv"
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

// The fleet of the mixed log: as `canonlog gen --hosts 2000 --rollouts 40`
// would make it, with gen's default share of failing probe results.
const (
	mixHosts     = 2000
	mixRollouts  = 40
	mixFailRatio = 0.2
)

// mixProbes are the probes of the mixed log, as `canonlog gen` has them.
var mixProbes = []struct {
	name, framework string
	controls        []string
}{
	{"ssh-hardening", "cis", []string{"CIS-5.2.1", "CIS-5.2.2", "CIS-5.2.3", "CIS-5.2.4"}},
	{"filesystem", "cis", []string{"CIS-1.1.1", "CIS-1.1.2", "CIS-1.1.3"}},
	{"audit-logging", "nist", []string{"AU-2", "AU-3", "AU-12"}},
	{"kernel-params", "stig", []string{"V-230266", "V-230267"}},
}

// mixRand is a splitmix64 stream seeded by an event's number, so that
// event i is the same whoever makes it, in whatever order: the fill and
// concurrent writers draw without sharing a generator.
type mixRand struct{ s uint64 }

func (r *mixRand) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *mixRand) intn(n int) int { return int(r.next() % uint64(n)) }

func (r *mixRand) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// mixEntry returns event i of the mixed log: the control-plane history of
// `canonlog gen` — 55% probe results (a tenth of them in observe mode, a
// fifth failing), 10% heartbeats, then plan actions, effects, manifest
// polls, verify outcomes, gate decisions and rollout events — so that
// most events derive no probe_failures row, as in a real fleet: about one
// event in ten does. With agentOnly it draws from the agent events alone
// (probe results and heartbeats, 85 to 15), the kind probe_failures
// reads. Every entry carries an event id and ts at.
func mixEntry(i int64, agentOnly bool, at time.Time) eventlog.Entry {
	r := mixRand{s: uint64(i)}
	e := eventlog.Entry{
		TS:        at,
		HostID:    "host-" + pad5(r.intn(mixHosts)+1),
		RolloutID: "rollout-" + strconv.Itoa(r.intn(mixRollouts)+1),
		EventID:   "load-" + strconv.FormatInt(i, 10),
	}
	x := r.intn(100)
	if agentOnly {
		x = r.intn(65)
	}
	var p []byte
	switch {
	case x < 55:
		e.Kind = eventlog.KindAgentEvent
		p = mixProbe(&r, at)
	case x < 65:
		e.Kind = eventlog.KindAgentEvent
		p = append(append([]byte(`{"type":"Heartbeat","uptime_s":`), strconv.Itoa(r.intn(1_000_000))...), `,"agent_version":"2.4.1"}`...)
	case x < 75:
		e.Kind = eventlog.KindPlanAction
		p = append(append(append(append([]byte(`{"type":"ApplyConfig","config":"baseline@v`), strconv.Itoa(1+r.intn(9))...), `","step":`...), strconv.Itoa(r.intn(5))...), '}')
	case x < 83:
		e.Kind = eventlog.KindEffect
		p = append(append(append(append([]byte(`{"type":"ConfigApplied","changed_files":`), strconv.Itoa(r.intn(12))...), `,"duration_ms":`...), strconv.Itoa(r.intn(5000))...), '}')
	case x < 90:
		e.Kind = eventlog.KindManifestPoll
		p = append(append(append(append([]byte(`{"type":"ManifestPoll","etag":"`), strconv.FormatUint(r.next()&0xffffffff, 16)...), `","changed":`...), strconv.FormatBool(r.intn(4) == 0)...), '}')
	case x < 95:
		e.Kind = eventlog.KindVerifyOutcome
		p = append(append([]byte(`{"type":"SignatureVerified","ok":`), strconv.FormatBool(r.intn(50) != 0)...), `,"key_id":"release-2026"}`...)
	case x < 98:
		e.Kind, e.HostID = eventlog.KindGateDecision, ""
		decision := "proceed"
		if r.float() < mixFailRatio {
			decision = "hold"
		}
		p = append(append(append(append([]byte(`{"type":"GateDecision","wave":`), strconv.Itoa(1+r.intn(5))...), `,"decision":"`...), decision...), `"}`...)
	default:
		e.Kind, e.HostID = eventlog.KindRolloutEvent, ""
		p = append(append([]byte(`{"type":"`), []string{"RolloutStarted", "WaveAdvanced", "RolloutPaused", "RolloutCompleted"}[r.intn(4)]...), `"}`...)
	}
	e.Payload = p
	return e
}

// mixProbe returns a probe result as gen makes it: failing (with at least
// one failing control) with probability mixFailRatio, observe mode for a
// tenth. observed_at is up to a minute before at.
func mixProbe(r *mixRand, at time.Time) []byte {
	def := mixProbes[r.intn(len(mixProbes))]
	mode, status := "enforce", "pass"
	if r.intn(10) == 0 {
		mode = "observe"
	}
	failing := r.float() < mixFailRatio
	mustFail := -1
	if failing {
		status = "fail"
		mustFail = r.intn(len(def.controls))
	}
	observed := at.Add(-time.Duration(r.intn(60)) * time.Second).UTC()
	p := make([]byte, 0, 320)
	p = append(p, `{"type":"ProbeResult","mode":"`...)
	p = append(p, mode...)
	p = append(p, `","status":"`...)
	p = append(p, status...)
	p = append(p, `","probe_name":"`...)
	p = append(p, def.name...)
	p = append(p, `","observed_at":"`...)
	p = observed.AppendFormat(p, time.RFC3339)
	p = append(p, `","sub_results":[`...)
	for j, c := range def.controls {
		st := "pass"
		if failing && (j == mustFail || r.intn(4) == 0) {
			st = "fail"
		}
		if j > 0 {
			p = append(p, ',')
		}
		p = append(p, `{"control_id":"`...)
		p = append(p, c...)
		p = append(p, `","framework":"`...)
		p = append(p, def.framework...)
		p = append(p, `","status":"`...)
		p = append(p, st...)
		p = append(p, `"}`...)
	}
	return append(p, "]}"...)
}

func pad5(n int) string {
	s := strconv.Itoa(n)
	for len(s) < 5 {
		s = "0" + s
	}
	return s
}
