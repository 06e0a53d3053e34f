package canonlogcli

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// TestVerifyJSON: verify -o json prints one object per projection with
// its counts, its checksums and the differing rows, and exits 3 when one
// differs.
func TestVerifyJSON(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend).migrated()
		c.ok(c.ok("", "gen", "--events", "300", "--hosts", "10", "--fail-ratio", "0.5"), "append", "--file", "-")

		var equal []map[string]any
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "verify", "-o", "json")), &equal))
		require.Len(t, equal, 1)
		require.Equal(t, "probe_failures", equal[0]["name"])
		require.Equal(t, true, equal[0]["equal"])
		require.Equal(t, float64(0), equal[0]["missing"])
		require.Equal(t, float64(0), equal[0]["extra"])
		require.Positive(t, equal[0]["events"])
		require.Equal(t, equal[0]["live_checksum"], equal[0]["fresh_checksum"])
		require.NotEmpty(t, equal[0]["live_checksum"])
		require.Equal(t, []any{}, equal[0]["samples"], "an empty list, not null")

		tamper(t, c)
		r := c.run("", "verify", "probe_failures", "-o", "json")
		require.Equal(t, exitDifferent, r.code, r.err)
		require.Equal(t, "canonlog: verify: probe_failures differs from a fresh derivation of the log: run 'canonlog rebuild probe_failures' to repair it\n", r.err)
		var differs []map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.out), &differs))
		require.Len(t, differs, 1)
		d := differs[0]
		keys := make([]string, 0, len(d))
		for k := range d {
			keys = append(keys, k)
		}
		require.ElementsMatch(t, []string{"name", "equal", "events", "missing", "extra", "live_checksum", "fresh_checksum", "samples"}, keys)
		require.Equal(t, false, d["equal"])
		require.Equal(t, float64(1), d["missing"])
		require.Equal(t, float64(1), d["extra"])
		require.NotEqual(t, d["live_checksum"], d["fresh_checksum"])
		samples := d["samples"].([]any)
		require.Len(t, samples, 2)
		var sides, controls []string
		for _, x := range samples {
			smp := x.(map[string]any)
			require.Equal(t, "probe_failures", smp["table"])
			sides = append(sides, smp["side"].(string))
			row := smp["row"].(map[string]any)
			controls = append(controls, row["control_id"].(string))
			require.NotEmpty(t, row["framework"])
			require.NotEmpty(t, row["event_log_seq"])
		}
		require.ElementsMatch(t, []string{"missing", "extra"}, sides)
		require.Contains(t, controls, "TAMPERED")

		// The table says the same, in words.
		r = c.run("", "verify")
		require.Equal(t, exitDifferent, r.code, r.err)
		require.Contains(t, r.out, "probe_failures: DIFFERS from a fresh derivation (")
		require.Contains(t, r.out, "1 row missing from the live view, 1 extra")
	})
}
