package peers

import (
	"fmt"
	"strconv"
)

// The workload: event i of every scenario is an agent event of one of
// hostCount hosts and rolloutCount rollouts whose payload is one of
// payloadVariants probe results of about 260 bytes. The payloads are made
// once, so that no side spends its timed rounds formatting them.
const (
	hostCount       = 2000
	rolloutCount    = 40
	payloadVariants = 1024
	eventKind       = "agent_event"
)

var payloads = func() [][]byte {
	out := make([][]byte, payloadVariants)
	for v := range out {
		status := "pass"
		if v%5 == 0 {
			status = "fail"
		}
		out[v] = fmt.Appendf(nil, `{"type":"ProbeResult","mode":"enforce","status":%q,"probe_name":"ssh-hardening-%03d",`+
			`"observed_at":"2026-05-16T01:%02d:%02dZ","sub_results":[{"control_id":"CIS-5.2.%d","framework":"cis","status":%q},`+
			`{"control_id":"CIS-5.2.%d","framework":"cis","status":"pass"}]}`,
			status, v%1000, v/60%60, v%60, v%17, status, v%17+1)
	}
	return out
}()

// payload returns event i's payload. Callers must not modify it.
func payload(i int) []byte { return payloads[i%payloadVariants] }

// hostID and rolloutID return event i's host and rollout.
func hostID(i int) string    { return "host-" + strconv.Itoa(i%hostCount) }
func rolloutID(i int) string { return "rollout-" + strconv.Itoa(i%rolloutCount) }

// payloadBytes returns the payload bytes of events first … first+n-1.
func payloadBytes(first, n int) int64 {
	var sum int64
	for i := first; i < first+n; i++ {
		sum += int64(len(payload(i)))
	}
	return sum
}
