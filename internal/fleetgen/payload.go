package fleetgen

import (
	"strconv"
	"time"
)

// eventType is what an event records: its kind and its payload's type.
type eventType int

const (
	typeProbe eventType = iota
	typeHeartbeat
	typeInventory
	typeLogShipped
	typeServiceRestarted
	typePlanAction
	typeEffect
	typeManifestPoll
	typeVerifyOutcome
	typeGateDecision
	typeRolloutEvent
)

// otherType is a type of event other than probe results: agent events
// (agent) or control-plane events, with its weight among them. With the
// realistic shares (55% probe results) a weight of 10 is 4.5% of events.
type otherType struct {
	t      eventType
	weight float64
	agent  bool
}

var otherTypes = []otherType{
	{typeHeartbeat, 20, true},
	{typeInventory, 8, true},
	{typeLogShipped, 8, true},
	{typeServiceRestarted, 4, true},
	{typePlanAction, 20, false},
	{typeEffect, 17, false},
	{typeManifestPoll, 12, false},
	{typeVerifyOutcome, 6, false},
	{typeGateDecision, 3, false},
	{typeRolloutEvent, 2, false},
}

// Shape of the realistic probe results.
const (
	// probeErrorShare is the share of probe results that do not fail
	// whose status is "error": the probe could not run.
	probeErrorShare = 0.04
	// skipShare is the chance that a control that does not fail is
	// "skip" (not applicable) rather than "pass".
	skipShare = 0.04
	// failMore is the chance that a control other than the first failing
	// one also fails, in a failing probe result: tuned so that one fails
	// about 2.25 controls and, with the realistic shares, the history
	// derives about 0.28 probe_failures rows per event
	// (TestRealisticRatios measures it).
	failMore = 0.5
	// evidenceShare is the chance that a failing control carries
	// evidence.
	evidenceShare = 0.3
	// noRolloutShare is the share of probe results outside any rollout.
	noRolloutShare = 0.05
	// oldAgentObservedAt is the chance that an old agent sends
	// observed_at; probe_failures then takes the event's ts.
	oldAgentObservedAt = 0.6
)

// Shape of the dense probe results: controls C-0 to C-50 (cis) and N-0 to
// N-19 (nist).
const (
	denseControls     = 50
	denseNISTControls = 20
	denseProbes       = 7
)

// writer appends a JSON object's members. Values given as strings are
// already escaped JSON string contents (the catalog's).
type writer struct{ b []byte }

func (w *writer) open(typ string) {
	w.b = append(w.b, `{"type":"`...)
	w.b = append(w.b, typ...)
	w.b = append(w.b, '"')
}

func (w *writer) key(k string) {
	w.b = append(w.b, ',', '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *writer) str(k, v string) {
	w.key(k)
	w.b = append(w.b, '"')
	w.b = append(w.b, v...)
	w.b = append(w.b, '"')
}

func (w *writer) int(k string, v int) {
	w.key(k)
	w.b = strconv.AppendInt(w.b, int64(v), 10)
}

func (w *writer) bool(k string, v bool) {
	w.key(k)
	w.b = strconv.AppendBool(w.b, v)
}

func (w *writer) time(k string, t time.Time, layout string) {
	w.key(k)
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, layout)
	w.b = append(w.b, '"')
}

func (w *writer) close() { w.b = append(w.b, '}') }

func pick(r *rng, xs []string) string { return xs[r.intn(len(xs))] }

// Time zones some agents report observed_at in.
var zones = []*time.Location{time.FixedZone("", 2*3600), time.FixedZone("", -5*3600), time.FixedZone("", 5*3600+1800)}

const rfc3339Milli = "2006-01-02T15:04:05.000Z07:00"

// probe writes a realistic probe result: failing with the Fail share (one
// control for sure, each other with failMore), else "error" now and then,
// else passing; observe mode with the Observe share. Old agents send no
// duration_ms and often no observed_at. observed_at is
// up to 90 s before ts, in whole seconds in UTC mostly, else with
// milliseconds, else with a zone offset.
func (g *Generator) probe(w *writer, r *rng, h hostTraits, ts time.Time) {
	probes, errs := linuxProbes, linuxProbeErrors
	if h.windows {
		probes, errs = windowsProbes, windowsProbeErrors
	}
	def := &probes[r.intn(len(probes))]
	mode := "enforce"
	if r.chance(g.shares.Observe) {
		mode = "observe"
	}
	status := "pass"
	switch x := r.float(); {
	case x < g.shares.Fail:
		status = "fail"
	case x < g.shares.Fail+(1-g.shares.Fail)*probeErrorShare:
		status = "error"
	}
	w.open("ProbeResult")
	w.str("mode", mode)
	w.str("status", status)
	name := def.name
	if len(def.spellings) > 0 {
		name = pick(r, def.spellings)
	}
	w.str("probe_name", name)
	if !h.oldAgent || r.chance(oldAgentObservedAt) {
		observed := ts.Add(-time.Duration(r.intn(90_000)) * time.Millisecond)
		switch x := r.intn(10); {
		case x < 7:
			w.time("observed_at", observed.UTC().Truncate(time.Second), time.RFC3339)
		case x < 9:
			w.time("observed_at", observed.UTC(), rfc3339Milli)
		default:
			w.time("observed_at", observed.In(zones[r.intn(len(zones))]).Truncate(time.Second), time.RFC3339)
		}
	}
	if !h.oldAgent {
		w.int("duration_ms", 5+r.intn(3000))
	}
	if status == "error" {
		w.str("error", pick(r, errs))
		w.b = append(w.b, `,"sub_results":[]}`...)
		return
	}
	w.key("sub_results")
	w.b = append(w.b, '[')
	first := -1
	if status == "fail" {
		first = r.intn(len(def.controls))
	}
	for j, c := range def.controls {
		st := "pass"
		switch {
		case status == "fail" && (j == first || r.chance(failMore)):
			st = "fail"
		case r.chance(skipShare):
			st = "skip"
		}
		if j > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, `{"control_id":"`...)
		w.b = append(w.b, c...)
		w.b = append(w.b, `","framework":"`...)
		w.b = append(w.b, def.framework...)
		w.b = append(w.b, `","status":"`...)
		w.b = append(w.b, st...)
		w.b = append(w.b, '"')
		if st == "fail" && r.chance(evidenceShare) {
			w.str("evidence", pick(r, def.evidence))
		}
		w.b = append(w.b, '}')
	}
	w.b = append(w.b, "]}"...)
}

// denseProbe writes a probe result of the dense profile: three controls
// with the probe's status, observed_at in whole seconds.
func (g *Generator) denseProbe(w *writer, r *rng, ts time.Time) {
	mode, st := "enforce", "pass"
	if r.chance(g.shares.Observe) {
		mode = "observe"
	}
	if r.chance(g.shares.Fail) {
		st = "fail"
	}
	w.open("ProbeResult")
	w.str("mode", mode)
	w.str("status", st)
	w.str("probe_name", "probe-"+strconv.Itoa(r.intn(denseProbes)))
	w.time("observed_at", ts.UTC().Truncate(time.Second), time.RFC3339)
	a, b := r.intn(denseControls), r.intn(denseNISTControls)
	w.key("sub_results")
	for j, c := range []struct{ id, fw string }{{"C-" + strconv.Itoa(a), "cis"}, {"C-" + strconv.Itoa(a+1), "cis"}, {"N-" + strconv.Itoa(b), "nist"}} {
		if j == 0 {
			w.b = append(w.b, '[')
		} else {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, `{"control_id":"`...)
		w.b = append(w.b, c.id...)
		w.b = append(w.b, `","framework":"`...)
		w.b = append(w.b, c.fw...)
		w.b = append(w.b, `","status":"`...)
		w.b = append(w.b, st...)
		w.b = append(w.b, `"}`...)
	}
	w.b = append(w.b, "]}"...)
}

func heartbeat(w *writer, r *rng, h hostTraits) {
	w.open("Heartbeat")
	w.int("uptime_s", r.intn(4_000_000))
	if !h.oldAgent {
		w.str("agent_version", h.version)
	}
	w.key("load")
	for j := range 3 {
		if j == 0 {
			w.b = append(w.b, '[')
		} else {
			w.b = append(w.b, ',')
		}
		w.b = strconv.AppendFloat(w.b, float64(r.intn(400))/100, 'f', 2, 64)
	}
	w.b = append(w.b, "]}"...)
}

func inventory(w *writer, r *rng, h hostTraits) {
	manager, pkgs := "apt", linuxPackages
	if h.windows {
		manager, pkgs = "msi", windowsPackages
	}
	w.open("PackageInventory")
	w.str("manager", manager)
	w.int("installed", 300+r.intn(1500))
	w.int("upgradable", r.intn(40))
	w.key("changed")
	w.b = append(w.b, '[')
	k, n := r.intn(len(pkgs)), r.intn(3)
	for j := range n {
		if j > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, pkgs[(k+j)%len(pkgs)]...)
	}
	w.b = append(w.b, "]}"...)
}

func logShipped(w *writer, r *rng, h hostTraits) {
	sources, lines := linuxLogSources, linuxLogLines
	if h.windows {
		sources, lines = windowsLogSources, windowsLogLines
	}
	w.open("LogShipped")
	w.str("source", pick(r, sources))
	w.int("bytes", 1000+r.intn(4_000_000))
	w.int("lines", 10+r.intn(20000))
	w.str("last_line", pick(r, lines))
	w.close()
}

func serviceRestarted(w *writer, r *rng, h hostTraits) {
	svcs := services
	if h.windows {
		svcs = windowsServices
	}
	w.open("ServiceRestarted")
	w.str("service", pick(r, svcs))
	w.int("exit_code", []int{0, 0, 0, 1, 143}[r.intn(5)])
	w.str("message", pick(r, restartMessages))
	w.close()
}

func planAction(w *writer, r *rng, h hostTraits, rollout string) {
	files := linuxFiles
	if h.windows {
		files = windowsFiles
	}
	steps := 2 + r.intn(4)
	w.open("ApplyConfig")
	w.key("plan_id")
	w.b = append(w.b, '"')
	w.b = append(w.b, rollout...)
	w.b = append(w.b, "/p"...)
	w.b = strconv.AppendInt(w.b, int64(r.intn(1000)), 10)
	w.b = append(w.b, '"')
	w.str("config", pick(r, configs))
	w.int("step", 1+r.intn(steps))
	w.int("of", steps)
	w.key("files")
	w.b = append(w.b, `["`...)
	w.b = append(w.b, pick(r, files)...)
	w.b = append(w.b, `"]}`...)
}

func effect(w *writer, r *rng, h hostTraits) {
	if r.chance(0.1) {
		w.open("ConfigFailed")
		w.int("duration_ms", 10+r.intn(30_000))
		w.str("error", pick(r, applyErrors))
		w.close()
		return
	}
	w.open("ConfigApplied")
	w.int("changed_files", r.intn(12))
	w.int("duration_ms", 10+r.intn(30_000))
	w.bool("reboot_required", h.windows && r.chance(0.2))
	w.close()
}

const hexDigits = "0123456789abcdef"

func appendHex(b []byte, v uint64, digits int) []byte {
	for k := digits - 1; k >= 0; k-- {
		b = append(b, hexDigits[(v>>(4*uint(k)))&0xf])
	}
	return b
}

func manifestPoll(w *writer, r *rng) {
	w.open("ManifestPoll")
	w.key("etag")
	w.b = append(w.b, `"\"`...)
	w.b = appendHex(w.b, r.next(), 16)
	w.b = append(w.b, `\""`...)
	w.bool("changed", r.chance(0.25))
	w.int("bytes", 800+r.intn(60_000))
	w.close()
}

func verifyOutcome(w *writer, r *rng) {
	w.open("SignatureVerified")
	w.bool("ok", !r.chance(0.02))
	w.str("key_id", "release-2026")
	w.key("digest")
	w.b = append(w.b, `"sha256:`...)
	for range 4 {
		w.b = appendHex(w.b, r.next(), 16)
	}
	w.b = append(w.b, '"')
	w.close()
}

func (g *Generator) gateDecision(w *writer, r *rng) {
	w.open("GateDecision")
	w.int("wave", 1+r.intn(5))
	hold := r.chance(g.shares.Fail)
	failing := r.intn(5)
	if hold {
		failing = 5 + r.intn(40)
	}
	decision := "proceed"
	if hold {
		decision = "hold"
	}
	w.str("decision", decision)
	w.int("failing_hosts", failing)
	w.int("threshold", 5)
	if hold {
		w.str("reason", `controls \"CIS-5.2.1\", \"AU-2\" fail on more hosts than allowed`)
	}
	w.close()
}

func rolloutEvent(w *writer, r *rng, hosts int) {
	typ := pick(r, rolloutTypes)
	w.open(typ)
	w.int("wave", 1+r.intn(5))
	w.int("hosts", 1+r.intn(hosts))
	w.str("by", pick(r, operators))
	if typ == "RolloutPaused" {
		w.str("reason", `gate \"compliance\" held the wave`)
	}
	w.close()
}
