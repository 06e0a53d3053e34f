package canonlogcli

import (
	"bufio"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
)

func TestGen(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCLI(t, "gen", "--events", "2000", "--hosts", "30", "--rollouts", "4", "--fail-ratio", "0.5", "--seed", "3")
	require.Equal(t, 0, code, errOut)
	again, _, _ := runCLI(t, "gen", "--events", "2000", "--hosts", "30", "--rollouts", "4", "--fail-ratio", "0.5", "--seed", "3")
	require.Equal(t, out, again, "the same seed writes the same bytes")
	other, _, _ := runCLI(t, "gen", "--events", "2000", "--seed", "4")
	require.NotEqual(t, out, other)

	kinds := map[eventlog.Kind]int{}
	hosts, rollouts := map[string]bool{}, map[string]bool{}
	failingRows, probes := 0, 0
	sc := bufio.NewScanner(strings.NewReader(out))
	lines := 0
	for sc.Scan() {
		lines++
		e, err := parseEntryLine(sc.Bytes())
		require.NoError(t, err, "line %d is valid append input", lines)
		require.NotEmpty(t, e.EventID)
		kinds[e.Kind]++
		if e.HostID != "" {
			hosts[e.HostID] = true
		}
		rollouts[e.RolloutID] = true
		var p struct{ Type string }
		require.NoError(t, json.Unmarshal(e.Payload, &p))
		if p.Type == probefailures.TypeProbeResult {
			probes++
			rows, err := probefailures.Rows(nil, eventlog.Event{Kind: e.Kind, TS: e.TS, HostID: e.HostID, RolloutID: e.RolloutID, Payload: e.Payload})
			require.NoError(t, err)
			failingRows += len(rows)
		}
	}
	require.Equal(t, 2000, lines)
	require.Len(t, kinds, 7, "every predefined kind occurs: %v", kinds)
	require.Len(t, hosts, 30)
	require.Len(t, rollouts, 4)
	require.Greater(t, probes, 900)
	require.Greater(t, failingRows, probes/3, "about half the probe results fail, mostly in enforce mode")

	out, _, code = runCLI(t, "gen", "--events", "0")
	require.Equal(t, 0, code)
	require.Empty(t, out)
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
	require.NoError(t, runGen(t.Context(), &h, genOptions{events: 100_000, hosts: 500, rollouts: 5, failRatio: 0.2, seed: 1}))
	require.Greater(t, h.writes, 400, "output is written as it is generated")
	require.Less(t, h.max-h.min, uint64(8<<20), "live heap grew from %d to %d bytes", h.min, h.max)
}
