package canonlogcli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// consumers status shows a consumer that stopped on an event and one that
// parked it; reset moves the first back to the beginning; parked lists
// the parked event; unknown names and missing flags are refused.
func TestConsumers(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		c := newCLI(t, backend).migrated()
		require.Contains(t, c.ok("", "consumers", "status"), "no consumers: none has run on this database")
		for range 3 {
			c.ok("", "append", "--kind", "effect", "--payload", "{}")
		}
		log, err := eventlog.New(c.db(), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })
		failOn2 := func(_ context.Context, ev eventlog.Event) error {
			if ev.Seq == 2 {
				return errors.New("downstream said no")
			}
			return nil
		}
		for _, cfg := range []consumer.Config{
			{Name: "stops", Handle: failOn2, Attempts: 1},
			{Name: "parks", Handle: failOn2, Attempts: 1, OnFailure: consumer.FailPark},
		} {
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			con, err := consumer.New(log, &cfg)
			require.NoError(t, err)
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- con.Run(runCtx) }()
			if cfg.OnFailure == consumer.FailStop {
				var he *consumer.HandlerError
				require.ErrorAs(t, <-done, &he)
				cancel()
				continue
			}
			require.Eventually(t, func() bool {
				sts, err := consumer.ReadStatus(ctx, log)
				require.NoError(t, err)
				for _, s := range sts {
					if s.Name == "parks" && s.HandledSeq == 3 {
						return true
					}
				}
				return false
			}, time.Minute, 10*time.Millisecond)
			cancel()
			require.NoError(t, <-done)
		}

		out := c.ok("", "consumers", "status")
		require.Regexp(t, `(?m)^parks +3 +0 +0\.0 +1 +- +1 `, out)
		// It saved its position past event 1 before it stopped on 2.
		require.Regexp(t, `(?m)^stops +1 +2 +\d+\.\d +0 +2 +1 `, out)
		require.Contains(t, out, "stops stopped on event 2: downstream said no")
		var reports []consumerReport
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "consumers", "status", "-o", "json")), &reports))
		require.Len(t, reports, 2)
		require.Equal(t, "parks", reports[0].Name)
		require.Equal(t, []string{"*"}, reports[0].Kinds)
		require.EqualValues(t, 2, reports[1].FailedSeq)

		require.Contains(t, c.ok("", "consumers", "parked", "--name", "parks"), "downstream said no")
		var parked []parkedReport
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "consumers", "parked", "--name", "parks", "-o", "json")), &parked))
		require.Len(t, parked, 1)
		require.EqualValues(t, 2, parked[0].Seq)
		require.Contains(t, c.ok("", "consumers", "parked", "--name", "stops"), "consumer stops has parked no event")
		require.Equal(t, c.ok("", "consumers", "parked", "--name", "parks"), c.ok("", "consumers", "parked", "list", "--name", "parks"))

		// retry and skip: a seq that is not parked changes nothing.
		r := c.run("", "consumers", "parked", "retry", "--name", "parks", "--seq", "2,3")
		require.Equal(t, 1, r.code)
		require.Contains(t, r.err, "event not parked: 1 of the 2 events given are not parked by consumer parks")
		require.Equal(t, "consumer parks tries 1 parked event again when it next has nothing else to handle\n",
			c.ok("", "consumers", "parked", "retry", "--name", "parks", "--seq", "2"))
		require.Regexp(t, `(?m)^2 +1 +\S+ +asked \S+ +downstream said no$`, c.ok("", "consumers", "parked", "list", "--name", "parks"))
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "consumers", "parked", "--name", "parks", "-o", "json")), &parked))
		require.NotNil(t, parked[0].RetryRequestedAt)
		for _, args := range [][]string{
			{"retry", "--name", "parks"},                        // neither --seq nor --all
			{"retry", "--name", "parks", "--all", "--seq", "2"}, // both
			{"skip", "--all"},                                   // no --name
			{"skip", "--name", "parks", "--seq", "0"},
			{"skip", "--name", "parks", "--seq", "x"},
		} {
			r := c.run("", append([]string{"consumers", "parked"}, args...)...)
			require.Equal(t, exitUsage, r.code, "%v: %s", args, r.err)
		}
		require.Equal(t, "consumer parks skips 1 parked event\n", c.ok("", "consumers", "parked", "skip", "--name", "parks", "--all"))
		require.Contains(t, c.ok("", "consumers", "parked", "--name", "parks"), "consumer parks has parked no event")

		require.Equal(t, "consumer stops resumes after seq 0\n", c.ok("", "consumers", "reset", "--name", "stops", "--to-seq", "0"))
		require.NoError(t, json.Unmarshal([]byte(c.ok("", "consumers", "status", "-o", "json")), &reports))
		require.Zero(t, reports[1].HandledSeq)
		require.Zero(t, reports[1].FailedSeq)
		require.EqualValues(t, 2, reports[1].Generation, "the reset deposes")

		r = c.run("", "consumers", "reset", "--name", "nobody")
		require.Equal(t, 1, r.code)
		require.Equal(t, "canonlog: consumers reset: no consumer \"nobody\" has a position: 'canonlog consumers status' lists them\n", r.err)
		r = c.run("", "consumers", "reset", "--to-seq", "1")
		require.Equal(t, exitUsage, r.code)
		require.True(t, strings.HasPrefix(r.err, "canonlog: give the consumer to reset with --name\n"), r.err)
		r = c.run("", "consumers", "parked")
		require.Equal(t, exitUsage, r.code)
		r = c.run("", "consumers", "reset", "--name", "stops", "--to-seq", "-1")
		require.Equal(t, exitUsage, r.code)

		// A new handler version is reported.
		con, err := consumer.New(log, &consumer.Config{Name: "stops", Version: 3, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Handle: func(context.Context, eventlog.Event) error { return nil }})
		require.NoError(t, err)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- con.Run(runCtx) }()
		require.Eventually(t, func() bool {
			sts, err := consumer.ReadStatus(ctx, log)
			require.NoError(t, err)
			return sts[1].Version == 3
		}, time.Minute, 10*time.Millisecond)
		cancel()
		require.NoError(t, <-done)
		require.Regexp(t, `(?m)^stops changed at \S+: it ran with kinds=\*; version=1 before, and now with kinds=\*; version=3 \(`, c.ok("", "consumers", "status"))
	})
}
