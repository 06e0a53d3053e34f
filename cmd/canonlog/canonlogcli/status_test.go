package canonlogcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// status reports the log's head and each consumer's lag after known
// work; --check exits 0 while all is well, and 4 with the reasons for a
// consumer past a lag limit, a stopped consumer and a stale projection.
func TestStatusCheck(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		c := newCLI(t, backend).migrated()
		status := func(args ...string) statusReport {
			t.Helper()
			var rep statusReport
			require.NoError(t, json.Unmarshal([]byte(c.ok("", append([]string{"status", "-o", "json"}, args...)...)), &rep))
			return rep
		}
		check := func(args ...string) result {
			t.Helper()
			r := c.run("", append([]string{"status", "--check"}, args...)...)
			require.Equal(t, exitUnhealthy, r.code, "%v: %s", args, r.err)
			require.NotEmpty(t, r.out, "the report is printed all the same")
			return r
		}

		rep := status("--check")
		require.Zero(t, rep.LastSeq)
		require.Nil(t, rep.LastTS)
		require.Empty(t, rep.Consumers)
		require.NotNil(t, rep.Consumers, "a list, empty")

		// Five effects and one event of a kind the consumer does not take.
		for range 5 {
			c.ok("", "append", "--kind", "effect", "--payload", "{}", "--ts", "2026-05-16T01:00:00Z")
		}
		c.ok("", "append", "--kind", "plan_action", "--payload", "{}", "--ts", "2026-05-16T01:00:01Z")
		rep = status()
		require.EqualValues(t, 6, rep.LastSeq)
		require.Equal(t, time.Date(2026, 5, 16, 1, 0, 1, 0, time.UTC), *rep.LastTS)
		require.Contains(t, c.ok("", "status"), "events:   6 (last seq 6)\nlast ts:  2026-05-16T01:00:01Z\n")

		log, err := eventlog.New(c.db(), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })
		runConsumer := func(cfg consumer.Config, until func(consumer.Status) bool) {
			t.Helper()
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			con, err := consumer.New(log, &cfg)
			require.NoError(t, err)
			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- con.Run(runCtx) }()
			require.EventuallyWithT(t, func(ct *assert.CollectT) {
				sts, err := consumer.ReadStatus(ctx, log)
				require.NoError(ct, err)
				for _, s := range sts {
					if s.Name == cfg.Name && until(s) {
						return
					}
				}
				ct.Errorf("consumer %s is not there yet", cfg.Name)
			}, time.Minute, 10*time.Millisecond)
			cancel()
			if err := <-done; err != nil {
				var he *consumer.HandlerError
				require.ErrorAs(t, err, &he)
			}
		}
		runConsumer(consumer.Config{Name: "follows", Kinds: []eventlog.Kind{"effect"}, Handle: func(context.Context, eventlog.Event) error { return nil }},
			func(s consumer.Status) bool { return s.HandledSeq == 5 })
		// Three more effects: it handled 5 of 8, and the plan action
		// between does not count.
		for range 3 {
			c.ok("", "append", "--kind", "effect", "--payload", "{}", "--ts", "2026-05-16T02:00:00Z")
		}
		rep = status()
		require.Len(t, rep.Consumers, 1)
		follows := rep.Consumers[0]
		require.Equal(t, "follows", follows.Name)
		require.EqualValues(t, 5, follows.HandledSeq)
		require.NotEqual(t, eventlog.Position{}, follows.Position, "past the events it handled")
		require.EqualValues(t, 3, follows.LagEvents)
		require.Greater(t, follows.LagSeconds, time.Since(time.Date(2026, 5, 16, 2, 0, 0, 0, time.UTC)).Seconds()-60,
			"the age of the oldest effect it has yet to handle")
		require.False(t, follows.Stopped)
		require.Regexp(t, `(?m)^follows +5 +3 +\d+\.\d +no$`, c.ok("", "status"))

		c.ok("", "status", "--check")
		c.ok("", "status", "--check", "--max-lag-events", "3")
		r := check("--max-lag-events", "2")
		require.Equal(t, "canonlog: status --check: consumer follows lags 3 events behind, more than --max-lag-events 2\n", r.err)
		r = check("--max-lag", "60", "-o", "json")
		require.Regexp(t, `^canonlog: status --check: consumer follows lags \d+\.\d s behind, more than --max-lag 60\n$`, r.err)

		r = c.run("", "status", "--max-lag", "60")
		require.Equal(t, exitUsage, r.code)
		require.Equal(t, "canonlog: --max-lag-events and --max-lag are limits for --check: add --check\nRun 'canonlog status --help' for usage.\n", r.err)

		// A consumer that stopped on an event, and a stale projection.
		runConsumer(consumer.Config{Name: "stops", Attempts: 1, Handle: func(_ context.Context, ev eventlog.Event) error {
			if ev.Seq == 1 {
				return errors.New("downstream said no")
			}
			return nil
		}}, func(s consumer.Status) bool { return s.FailedSeq == 1 })
		rep = status()
		require.True(t, rep.Consumers[1].Stopped)
		require.EqualValues(t, 9, rep.Consumers[1].LagEvents)
		require.Regexp(t, `(?m)^stops +0 +9 +\d+\.\d +on event 1$`, c.ok("", "status"))
		_, err = c.db().Exec(`UPDATE canonlog_projections SET version = 0, built_seq = 0`)
		require.NoError(t, err)
		r = check()
		require.Equal(t, "canonlog: status --check: projection probe_failures is stale (never built): run 'canonlog rebuild --stale'; "+
			"consumer stops stopped on event 1: downstream said no\n", r.err)
		require.True(t, status().Projections[0].Stale)

		c.ok("", "rebuild", "--stale", "--progress", "none")
		c.ok("", "consumers", "reset", "--name", "stops", "--to-seq", "1")
		c.ok("", "status", "--check")
	})
}

// status on PostgreSQL shows the transaction that holds followers back,
// older at each call while it stays open; SQLite has none.
func TestStatusHorizon(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		c := newCLI(t, backend).migrated()
		status := func() statusReport {
			var rep statusReport
			require.NoError(t, json.Unmarshal([]byte(c.ok("", "status", "-o", "json")), &rep))
			return rep
		}
		if backend == "sqlite" {
			require.Nil(t, status().Horizon)
			require.NotContains(t, c.ok("", "status"), "horizon:")
			return
		}
		tx, err := c.db().BeginTxx(ctx, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback() })
		var (
			xid uint64
			pid int
		)
		require.NoError(t, tx.QueryRowxContext(ctx, `SELECT pg_current_xact_id()::text::numeric, pg_backend_pid()`).Scan(&xid, &pid))

		// Other tests' transactions on the shared server come and go; an
		// older one may hold the horizon for a while, never a newer one.
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			first, second := status().Horizon, status().Horizon
			require.NotNil(ct, first)
			require.NotNil(ct, second)
			require.LessOrEqual(ct, first.TxID, xid)
			require.LessOrEqual(ct, first.TxID, second.TxID, "the horizon never moves back")
			require.LessOrEqual(ct, second.TxID, xid)
			require.Equal(ct, xid, first.TxID)
			require.Equal(ct, xid, second.TxID)
			require.Equal(ct, pid, first.PID)
			require.Equal(ct, "idle in transaction", first.State)
			require.NotNil(ct, first.StartedAt)
			require.Positive(ct, first.AgeSeconds)
			require.Greater(ct, second.AgeSeconds, first.AgeSeconds)
		}, time.Minute, 50*time.Millisecond)

		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			require.Regexp(ct, fmt.Sprintf(`(?m)^horizon:  transaction %d \(pid %d, idle in transaction, database \w+\) holds followers back, running for \d+\.\d s$`, xid, pid),
				c.ok("", "status"))
		}, time.Minute, 50*time.Millisecond)
	})
}
