package fleetgen

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
)

func setup(t *testing.T, cfg *Config) *Generator {
	t.Helper()
	g, err := New(cfg)
	require.NoError(t, err)
	return g
}

func event(e eventlog.Entry, seq int64) eventlog.Event {
	return eventlog.Event{Seq: seq, Kind: e.Kind, TS: e.TS, HostID: e.HostID, RolloutID: e.RolloutID, Payload: e.Payload, EventID: e.EventID}
}

func share(n, of int) float64 { return float64(n) / float64(of) }

func TestNew(t *testing.T) {
	t.Parallel()
	g := setup(t, nil)
	require.Equal(t, Realistic, g.Profile())
	require.Equal(t, DefaultHosts, g.Hosts())
	require.Equal(t, DefaultRollouts, g.Rollouts())
	want, _ := DefaultShares(Realistic)
	require.Equal(t, want, g.Shares())
	require.Equal(t, DefaultStart, g.TS(0))
	require.Equal(t, DefaultStart.Add(3*DefaultInterval), g.TS(3))
	require.Equal(t, "host-00001", g.Host(0))
	require.Equal(t, "host-1000000", g.Host(999_999))
	require.Equal(t, "rollout-040", g.Rollout(39))

	dense := setup(t, &Config{Profile: Dense})
	want, _ = DefaultShares(Dense)
	require.Equal(t, want, dense.Shares())
	require.Contains(t, dense.Controls(), "C-50")
	require.Contains(t, g.Controls(), "CIS-5.2.1")

	nan := Shares{Probe: 0.5, Fail: 0.5}
	nan.Observe = nan.Observe / nan.Observe
	for name, cfg := range map[string]Config{
		"unknown profile":   {Profile: "sparse"},
		"negative hosts":    {Hosts: -1},
		"too many hosts":    {Hosts: MaxHosts + 1},
		"too many rollouts": {Rollouts: MaxRollouts + 1},
		"negative interval": {Interval: -time.Second},
		"probe share above": {Shares: &Shares{Probe: 1.5}},
		"negative fail":     {Shares: &Shares{Fail: -0.1}},
		"NaN observe":       {Shares: &nan},
	} {
		_, err := New(&cfg)
		require.Error(t, err, name)
	}
	_, err := New(&Config{Profile: "sparse"})
	require.ErrorContains(t, err, "use realistic or dense")
}

// Event i is a function of the Config and i: generated out of order, by
// concurrent goroutines, it is the same; another seed gives another
// history.
func TestEntryDeterministic(t *testing.T) {
	t.Parallel()
	const n = 2000
	for _, profile := range Profiles() {
		cfg := &Config{Profile: profile, Seed: 42}
		want := make([]eventlog.Entry, n)
		g := setup(t, cfg)
		for i := range want {
			want[i] = g.Entry(int64(i))
		}

		got := make([]eventlog.Entry, n)
		order := rand.Perm(n)
		var wg sync.WaitGroup
		for w := range 8 {
			gw := setup(t, cfg) // a generator of each writer's own, as separate processes
			wg.Go(func() {
				for k := w; k < n; k += 8 {
					i := order[k]
					got[i] = gw.Entry(int64(i))
				}
			})
		}
		wg.Wait()
		require.Equal(t, want, got, profile)

		other := setup(t, &Config{Profile: profile, Seed: 43})
		same := 0
		for i := range want {
			if bytes.Equal(other.Entry(int64(i)).Payload, want[i].Payload) {
				same++
			}
		}
		require.Less(t, same, n/10, "%s: seed 43 repeats seed 42's payloads", profile)
		require.Equal(t, "gen/42/7", want[7].EventID)
	}
}

// The realistic profile lands on its documented ratios, and every event is
// one the log and probe_failures accept.
func TestRealisticRatios(t *testing.T) {
	t.Parallel()
	const n = 200_000
	g := setup(t, nil)
	var (
		payloadBytes, rows, probes, failing, observe, noObserved, noRollout int
		failingEnforce, failingRows                                         int
		kinds                                                               = map[eventlog.Kind]int{}
		types                                                               = map[string]int{}
		hosts, rollouts                                                     = map[string]bool{}, map[string]bool{}
		buf                                                                 []probefailures.Row
	)
	for i := range int64(n) {
		e := g.Entry(i)
		if i < 20_000 {
			require.NoError(t, e.Validate(1<<20), string(e.Payload))
		}
		payloadBytes += len(e.Payload)
		kinds[e.Kind]++
		hosts[e.HostID] = true
		rollouts[e.RolloutID] = true
		var err error
		buf, err = probefailures.Rows(buf[:0], event(e, i+1))
		if err != nil { // not require: its cost shows under the race detector
			t.Fatalf("event %d: %v: %s", i, err, e.Payload)
		}
		rows += len(buf)
		// Every payload begins with its type, and a probe result with its
		// mode and status: reading them off the bytes keeps the test fast
		// under the race detector. TestEscapes and TestObservedAt decode.
		typ, _, _ := strings.Cut(strings.TrimPrefix(string(e.Payload), `{"type":"`), `"`)
		types[typ]++
		if typ != probefailures.TypeProbeResult {
			if len(buf) > 0 {
				t.Fatalf("event %d is no probe result and derives rows: %s", i, e.Payload)
			}
			continue
		}
		if e.Kind != eventlog.KindAgentEvent {
			t.Fatalf("event %d is a probe result of kind %s", i, e.Kind)
		}
		probes++
		mode, status := modeStatus(t, e.Payload)
		if status == "fail" {
			failing++
			if mode == "enforce" {
				failingEnforce++
				failingRows += len(buf)
			}
		}
		if mode == "observe" {
			observe++
		}
		if !bytes.Contains(e.Payload, []byte(`"observed_at":`)) {
			noObserved++
		}
		if e.RolloutID == "" {
			noRollout++
		}
	}
	t.Logf("rows/event %.3f, payload %.1f B, probe results %.3f (failing %.3f, observe %.3f, no observed_at %.3f), failing controls per failing enforce result %.2f",
		share(rows, n), share(payloadBytes, n), share(probes, n), share(failing, probes), share(observe, probes), share(noObserved, probes), share(failingRows, failingEnforce))
	require.InDelta(t, 0.28, share(rows, n), 0.01, "probe_failures rows per event")
	require.InDelta(t, 260, share(payloadBytes, n), 10, "average payload bytes")
	require.InDelta(t, 0.55, share(probes, n), 0.01)
	require.InDelta(t, 0.25, share(failing, probes), 0.01)
	require.InDelta(t, 0.1, share(observe, probes), 0.01)
	require.InDelta(t, 0.08, share(noObserved, probes), 0.015)
	require.InDelta(t, 0.05, share(noRollout, probes), 0.01)
	require.InDelta(t, 2.25, share(failingRows, failingEnforce), 0.1)
	require.Len(t, kinds, 7, "every predefined kind: %v", kinds)
	require.InDelta(t, 0.73, share(kinds[eventlog.KindAgentEvent], n), 0.01)
	for _, typ := range []string{"Heartbeat", "PackageInventory", "LogShipped", "ServiceRestarted", "ApplyConfig", "ConfigApplied", "ConfigFailed",
		"ManifestPoll", "SignatureVerified", "GateDecision", "RolloutStarted", "WaveAdvanced", "RolloutPaused", "RolloutCompleted"} {
		require.Positive(t, types[typ], typ)
	}
	require.Len(t, hosts, DefaultHosts+1, "every host, and none for gate decisions and rollout events")
	require.Len(t, rollouts, DefaultRollouts+1, "every rollout, and none for agent events outside one")
}

// modeStatus reads a generated probe result's mode and status, which
// follow its type.
func modeStatus(t *testing.T, p []byte) (mode, status string) {
	rest, ok := bytes.CutPrefix(p, []byte(`{"type":"ProbeResult","mode":"`))
	if !ok {
		t.Fatalf("not a probe result: %s", p)
	}
	m, rest, _ := bytes.Cut(rest, []byte(`","status":"`))
	st, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(m), string(st)
}

// The dense profile is the old benchmark shape: every event a probe
// result, a third failing three controls.
func TestDenseRatios(t *testing.T) {
	t.Parallel()
	const n = 6000
	g := setup(t, &Config{Profile: Dense})
	rows, failing := 0, 0
	for i := range int64(n) {
		e := g.Entry(i)
		rs, err := probefailures.Rows(nil, event(e, i+1))
		require.NoError(t, err)
		require.Contains(t, []int{0, 3}, len(rs))
		if len(rs) > 0 {
			failing++
		}
		rows += len(rs)
	}
	require.InDelta(t, 1.0/3, share(failing, n), 0.02)
	require.InDelta(t, 1.0, share(rows, n), 0.06)
}

// Shares override the profile's: no failing results, no rows; every
// result in observe mode, no rows; agent events only.
func TestShares(t *testing.T) {
	t.Parallel()
	const n = 5000
	count := func(cfg *Config) (rows, probes int, kinds map[eventlog.Kind]int) {
		g := setup(t, cfg)
		kinds = map[eventlog.Kind]int{}
		for i := range int64(n) {
			e := g.Entry(i)
			kinds[e.Kind]++
			rs, err := probefailures.Rows(nil, event(e, i+1))
			require.NoError(t, err)
			rows += len(rs)
			if bytes.Contains(e.Payload, []byte(`"type":"ProbeResult"`)) {
				probes++
			}
		}
		return rows, probes, kinds
	}
	rows, probes, _ := count(&Config{Shares: &Shares{Probe: 0.5, Fail: 0, Observe: 0}})
	require.Zero(t, rows)
	require.InDelta(t, 0.5, share(probes, n), 0.03)
	rows, _, _ = count(&Config{Shares: &Shares{Probe: 0.5, Fail: 1, Observe: 1}})
	require.Zero(t, rows)
	rows, probes, _ = count(&Config{Shares: &Shares{Probe: 1, Fail: 1, Observe: 0}})
	require.Equal(t, n, probes)
	require.Greater(t, rows, 2*n)
	_, probes, _ = count(&Config{Shares: &Shares{Probe: 0, Fail: 1, Observe: 0}})
	require.Zero(t, probes)
	_, probes, kinds := count(&Config{AgentOnly: true})
	require.Equal(t, map[eventlog.Kind]int{eventlog.KindAgentEvent: n}, kinds)
	require.InDelta(t, 0.55/0.73, share(probes, n), 0.03, "probe results keep their proportion to the other agent events")
}

// Payloads carry escaped strings: quotes, backslashes, control characters,
// \u escapes and raw UTF-8, also in the fields probe_failures copies.
// Decoded, every spelling gives the same string.
func TestEscapes(t *testing.T) {
	t.Parallel()
	const n = 10_000
	g := setup(t, nil)
	found := map[string]int{}
	names := map[string]map[string]bool{} // decoded probe name → the spellings seen
	for i := range int64(n) {
		p := g.Entry(i).Payload
		for _, esc := range []string{`\\`, `\"`, `\n`, `\r`, `\t`, `\/`, `\u00`, `\ud83d`, `\u003e`} {
			if bytes.Contains(p, []byte(esc)) {
				found[esc]++
			}
		}
		if !utf8.Valid(p) {
			t.Fatalf("invalid UTF-8: %s", p)
		}
		if bytes.ContainsFunc(p, func(r rune) bool { return r >= utf8.RuneSelf }) {
			found["raw UTF-8"]++
		}
		var v struct {
			Type      string `json:"type"`
			ProbeName string `json:"probe_name"`
		}
		require.NoError(t, json.Unmarshal(p, &v))
		if v.Type == probefailures.TypeProbeResult {
			i := bytes.Index(p, []byte(`"probe_name":"`)) + len(`"probe_name":"`)
			j := i + bytes.Index(p[i:], []byte(`","`))
			if names[v.ProbeName] == nil {
				names[v.ProbeName] = map[string]bool{}
			}
			names[v.ProbeName][string(p[i:j])] = true
		}
	}
	for _, esc := range []string{`\\`, `\"`, `\n`, `\r`, `\t`, `\/`, `\u00`, `\ud83d`, `\u003e`, "raw UTF-8"} {
		require.Positive(t, found[esc], "no payload with %s", esc)
	}
	require.Equal(t, map[string]bool{`durcissement-système`: true, `durcissement-syst\u00e8me`: true}, names["durcissement-système"])
	require.Equal(t, map[string]bool{`registry:HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Defender`: true}, names[`registry:HKLM\SOFTWARE\Policies\Microsoft\Windows Defender`])
	require.Equal(t, map[string]bool{`osquery:SELECT name FROM users WHERE shell = \"/bin/sh\"`: true}, names[`osquery:SELECT name FROM users WHERE shell = "/bin/sh"`])

	// Every catalog string decodes, and re-encodes to what it decoded from
	// once escapes are normalized.
	for _, list := range [][]string{linuxProbeErrors, windowsProbeErrors, linuxLogSources, windowsLogSources, linuxLogLines, windowsLogLines,
		restartMessages, linuxFiles, windowsFiles, applyErrors, operators} {
		for _, s := range list {
			var dec string
			require.NoError(t, json.Unmarshal([]byte(`"`+s+`"`), &dec), s)
			require.NotContains(t, dec, "\x00")
		}
	}
	for _, p := range append(linuxProbes, windowsProbes...) {
		for _, s := range append(p.spellings, p.evidence...) {
			require.True(t, json.Valid([]byte(`"`+s+`"`)), s)
		}
		for _, s := range p.spellings {
			var dec string
			require.NoError(t, json.Unmarshal([]byte(`"`+s+`"`), &dec))
			require.Equal(t, p.name, dec)
		}
		if len(p.spellings) == 0 {
			require.False(t, strings.ContainsAny(p.name, "\"\\"), "a name with escapes needs its spellings: %s", p.name)
		}
	}
}

// observed_at comes in every form agents send, all RFC 3339, and is
// missing now and then.
func TestObservedAt(t *testing.T) {
	t.Parallel()
	g := setup(t, nil)
	forms := map[string]int{}
	for i := range int64(5000) {
		e := g.Entry(i)
		var p probefailures.ProbeResult
		require.NoError(t, json.Unmarshal(e.Payload, &p))
		if p.Type != probefailures.TypeProbeResult {
			continue
		}
		if p.ObservedAt == "" {
			forms["missing"]++
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, p.ObservedAt)
		require.NoError(t, err)
		require.False(t, at.After(e.TS), "observed after it was reported")
		require.Less(t, e.TS.Sub(at), 91*time.Second)
		switch {
		case strings.Contains(p.ObservedAt, "."):
			forms["milliseconds"]++
		case strings.HasSuffix(p.ObservedAt, "Z"):
			forms["seconds"]++
		default:
			forms["offset"]++
		}
	}
	require.Len(t, forms, 4, "%v", forms)
}

func BenchmarkEntry(b *testing.B) {
	for _, profile := range Profiles() {
		b.Run(profile, func(b *testing.B) {
			g, err := New(&Config{Profile: profile})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var n int
			for i := range b.N {
				n += len(g.Entry(int64(i)).Payload)
			}
			b.ReportMetric(float64(n)/float64(b.N), "payload-bytes")
		})
	}
}
