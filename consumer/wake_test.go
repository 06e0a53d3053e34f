package consumer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// A consumer that has caught up waits for a wake-up, not for its poll:
// with an hour between polls it still handles the events appended after
// it started, in this process (both backends) or, on PostgreSQL, by
// another process's log with Notify (this one listening) — also when
// other tests' transactions hold the followers' horizon back for a while
// after the wake-up.
func TestWakeUp(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		db := b.Migrated(t)
		var cfg eventlog.Config
		if backend == "postgres" {
			cfg.ListenURL = b.URL
		}
		log, err := eventlog.New(db, &cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })
		writers := []*eventlog.Log{log}
		if backend == "postgres" {
			other, err := eventlog.New(b.Open(t), &eventlog.Config{Notify: true})
			require.NoError(t, err)
			t.Cleanup(func() { _ = other.Close() })
			writers = append(writers, other)
		}

		var (
			mu  sync.Mutex
			got []int64
		)
		c, err := consumer.New(log, &consumer.Config{Name: "woken", Kinds: []eventlog.Kind{eventlog.KindAgentEvent},
			PollInterval: time.Hour, Logger: quiet,
			Handle: func(_ context.Context, ev eventlog.Event) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, ev.Seq)
				return nil
			}})
		require.NoError(t, err)
		running(t, c)
		waitUntil(t, "the consumer's takeover", func() bool {
			sts, err := consumer.ReadStatus(ctx, log)
			require.NoError(t, err)
			return len(sts) == 1
		})

		var want []int64
		for i, w := range writers {
			res, err := w.Append(ctx, agent("h", fmt.Sprintf(`{"n":%d}`, i+1)))
			require.NoError(t, err)
			want = append(want, res.Event.Seq)
			waitUntil(t, fmt.Sprintf("the event of writer %d", i), func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == len(want)
			})
		}
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, want, got)
	})
}
