package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// Both latency cases and the throughput case run and report, and the
// scratch schema is dropped; SQLite is refused.
func TestRun(t *testing.T) {
	t.Parallel()
	dbtest.New(t, "postgres") // skips, or fails under CANONLOG_REQUIRE_POSTGRES, without a server
	o := options{rate: 200, writers: 2, window: 300 * time.Millisecond, poll: 50 * time.Millisecond, events: 2000, batch: 500,
		prefix: "canonlog_test_consumebench", databaseURL: dbtest.PostgresURL(),
		// Other tests' transactions hold the followers' horizon back, on
		// a busy server for many seconds.
		settle: 3 * time.Minute}
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), o, &out))
	for _, c := range []string{`notify +poll 500ms`, `poll-only poll 50ms`} {
		require.Regexp(t, `LATENCY `+c+` +events [1-9]\d*  commit-to-handler p50 \S+  p99 \S+  max \S+`, out.String())
	}
	require.Regexp(t, `THROUGHPUT events 2000  probe_failures rows [1-9]\d*\n`, out.String())
	require.Regexp(t, `THROUGHPUT AppendBatch\(500\) [1-9]\d* events/s  async consumer \(page 500\) [1-9]\d* events/s  consumer ÷ append [\d.]+\n`, out.String())
	require.Contains(t, out.String(), "removed the scratch database")

	err := run(context.Background(), options{rate: 1, writers: 1, window: time.Millisecond, poll: time.Millisecond, batch: 1,
		prefix: "canonlog_test_consumebench", databaseURL: "sqlite:" + t.TempDir() + "/x.db"}, &out)
	require.ErrorContains(t, err, "PostgreSQL's")
}
