package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// The command runs its three windows on each backend, the busy one with a
// real second process, and drops its scratch database.
func TestRun(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		o := options{writers: 2, window: 300 * time.Millisecond, prefix: "canonlog_test_busycore",
			databaseURL: "sqlite:" + t.TempDir(),
			// A process that keeps a core busy until killed.
			spinner: []string{"sh", "-c", "while :; do :; done"}}
		if backend == "postgres" {
			o.databaseURL = dbtest.PostgresURL()
		}
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), o, &out))
		for _, w := range []string{"idle", "one-core-busy", "idle-again"} {
			require.Regexp(t, `WINDOW `+w+` +appends=[1-9]\d* p50=[\d.]+ms p99=[\d.]+ms max=[\d.]+ms`, out.String())
		}
		require.Contains(t, out.String(), "removed the scratch database") // scratchlog's tests check that it is gone
	})
}
