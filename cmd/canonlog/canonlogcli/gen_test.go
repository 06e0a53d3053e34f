package canonlogcli

import (
	"bufio"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/fleetgen"
	"github.com/canonlog/canonlog/probefailures"
)

// genStats reads gen's output: every line is append input; it counts
// kinds, hosts, rollouts, probe results and the probe_failures rows they
// derive (every probe result must be one probe_failures accepts).
type genStats struct {
	lines, probes, rows int
	kinds               map[eventlog.Kind]int
	hosts, rollouts     map[string]bool
	entries             []eventlog.Entry
}

func readGen(t *testing.T, out string) genStats {
	t.Helper()
	s := genStats{kinds: map[eventlog.Kind]int{}, hosts: map[string]bool{}, rollouts: map[string]bool{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		s.lines++
		e, err := parseEntryLine(sc.Bytes())
		require.NoError(t, err, "line %d is valid append input", s.lines)
		require.NotEmpty(t, e.EventID)
		s.entries = append(s.entries, e)
		s.kinds[e.Kind]++
		if e.HostID != "" {
			s.hosts[e.HostID] = true
		}
		s.rollouts[e.RolloutID] = true
		if strings.HasPrefix(string(e.Payload), `{"type":"ProbeResult"`) {
			s.probes++
		}
		rows, err := probefailures.Rows(nil, eventlog.Event{Kind: e.Kind, TS: e.TS, HostID: e.HostID, RolloutID: e.RolloutID, Payload: e.Payload})
		require.NoError(t, err)
		s.rows += len(rows)
	}
	return s
}

func TestGen(t *testing.T) {
	t.Parallel()
	args := []string{"gen", "--events", "2000", "--hosts", "30", "--rollouts", "4", "--fail-ratio", "0.5", "--seed", "3"}
	out, errOut, code := runCLI(t, args...)
	require.Equal(t, 0, code, errOut)
	again, _, _ := runCLI(t, args...)
	require.Equal(t, out, again, "the same seed writes the same bytes")
	other, _, _ := runCLI(t, "gen", "--events", "2000", "--seed", "4")
	require.NotEqual(t, out, other)

	s := readGen(t, out)
	require.Equal(t, 2000, s.lines)
	require.Len(t, s.kinds, 7, "every predefined kind occurs: %v", s.kinds)
	require.Len(t, s.hosts, 30)
	require.Len(t, s.rollouts, 5, "four rollouts, and none for agent events outside one")
	require.InDelta(t, 1100, s.probes, 100, "55% probe results")
	require.InDelta(t, 0.5*0.9*2.25*1100, s.rows, 150, "half the probe results fail, most in enforce mode, about two controls each")

	// The default history is the one canonlog bench measures (seed 1).
	out, _, code = runCLI(t, "gen", "--events", "50")
	require.Equal(t, 0, code)
	g, err := fleetgen.New(&fleetgen.Config{Seed: 1})
	require.NoError(t, err)
	for i, e := range readGen(t, out).entries {
		want := g.Entry(int64(i))
		require.Equal(t, want.Payload, e.Payload, "event %d", i)
		require.Equal(t, want.EventID, e.EventID)
		require.True(t, want.TS.Equal(e.TS))
	}

	out, _, code = runCLI(t, "gen", "--events", "0")
	require.Equal(t, 0, code)
	require.Empty(t, out)
}

// --profile and the ratio flags shape the history; out-of-range values
// are usage errors.
func TestGenShares(t *testing.T) {
	t.Parallel()
	gen := func(args ...string) genStats {
		out, errOut, code := runCLI(t, append([]string{"gen", "--events", "1000"}, args...)...)
		require.Equal(t, 0, code, errOut)
		return readGen(t, out)
	}
	dense := gen("--profile", "dense")
	require.Equal(t, 1000, dense.probes)
	require.InDelta(t, 1000, dense.rows, 150, "a third fail three controls each")
	require.Equal(t, map[eventlog.Kind]int{eventlog.KindAgentEvent: 1000}, dense.kinds)
	require.Zero(t, gen("--profile", "dense", "--fail-ratio", "0").rows)

	none := gen("--probe-ratio", "0")
	require.Zero(t, none.probes)
	require.Len(t, none.kinds, 7)
	all := gen("--probe-ratio", "1", "--fail-ratio", "1", "--observe-ratio", "0")
	require.Equal(t, 1000, all.probes)
	require.Greater(t, all.rows, 2000, "every probe result fails in enforce mode")
	require.Zero(t, gen("--observe-ratio", "1").rows, "observe mode derives no rows")

	for _, tc := range []struct{ args, want string }{
		{"--profile sparse", `--profile "sparse": use realistic or dense`},
		{"--probe-ratio 1.5", "--probe-ratio is 1.5, must be between 0 and 1"},
		{"--fail-ratio -0.1", "--fail-ratio is -0.1, must be between 0 and 1"},
		{"--observe-ratio NaN", "--observe-ratio is NaN, must be between 0 and 1"},
		{"--observe-ratio x", `invalid argument "x" for "--observe-ratio" flag`},
	} {
		_, errOut, code := runCLI(t, append([]string{"gen"}, strings.Fields(tc.args)...)...)
		require.Equal(t, exitUsage, code, "%s: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.want)
		require.Equal(t, 1, strings.Count(withoutHint(errOut), "\n"), "one line: %q", errOut)
	}

	// The help says what the ratios default to, and names the profiles.
	out, _, code := runCLI(t, "gen", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "share of probe results that fail, 0 to 1 (default: the profile's, 0.25 for realistic, 0.333 for dense)")
	require.NotContains(t, out, "(default 0)")
	require.Contains(t, out, "realistic  a fleet's history")
}

// heapProbe samples the live heap every so many writes of gen's output.
type heapProbe struct {
	writes   int
	min, max uint64
}

func (h *heapProbe) Write(p []byte) (int, error) {
	h.writes++
	if h.writes%200 == 0 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if h.min == 0 || ms.HeapAlloc < h.min {
			h.min = ms.HeapAlloc
		}
		h.max = max(h.max, ms.HeapAlloc)
	}
	return len(p), nil
}

// TestGenStreams: gen holds nothing back, so its memory does not grow
// with the number of events (a million take what a thousand take).
func TestGenStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 30 MB of NDJSON")
	}
	var h heapProbe
	shares, _ := fleetgen.DefaultShares(fleetgen.Realistic)
	require.NoError(t, runGen(t.Context(), &h, genOptions{events: 100_000, hosts: 500, rollouts: 5, profile: fleetgen.Realistic, shares: shares, seed: 1}))
	require.Greater(t, h.writes, 400, "output is written as it is generated")
	require.Less(t, h.max-h.min, uint64(8<<20), "live heap grew from %d to %d bytes", h.min, h.max)
}
