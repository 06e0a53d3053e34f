package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// Parked events are tried again when an operator asks (once each, by the
// running instance), or skipped; a seq that is not parked fails the call
// and changes nothing. In every handler style.
func TestRetryAndSkipParked(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend)
		var batch []eventlog.Entry
		for i := range 10 {
			payload := fmt.Sprintf(`{"n":%d}`, i)
			if i == 3 || i == 6 {
				payload = fmt.Sprintf(`{"poison":%d}`, i)
			}
			batch = append(batch, agent("h", payload))
		}
		res, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)
		first, second := res[3].Event.Seq, res[6].Event.Seq

		for i, style := range []string{"tx", "ext", "batch"} {
			var healed atomic.Bool
			offset := int64(i+1) * 1_000_000
			fails := func(ev eventlog.Event) error {
				if strings.Contains(string(ev.Payload), "poison") && !healed.Load() {
					return errors.New("poisoned")
				}
				return nil
			}
			insert := func(ctx context.Context, q sqlx.ExecerContext, ev eventlog.Event) error {
				_, err := q.ExecContext(ctx, db.Rebind(`INSERT INTO seen (seq) VALUES (?)`), ev.Seq+offset)
				return err
			}
			cfg := consumer.Config{Name: "retry_" + style, OnFailure: consumer.FailPark, Attempts: 1,
				PollInterval: 20 * time.Millisecond, MinBackoff: time.Millisecond, Logger: quiet}
			switch style {
			case "tx":
				cfg.HandleTx = func(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
					for _, ev := range events {
						if err := fails(ev); err != nil {
							return err
						}
						if err := insert(ctx, tx, ev); err != nil {
							return err
						}
					}
					return nil
				}
			case "ext":
				cfg.Handle = func(ctx context.Context, ev eventlog.Event) error {
					if err := fails(ev); err != nil {
						return err
					}
					return insert(ctx, db, ev)
				}
			default:
				cfg.HandleBatch = func(ctx context.Context, events []eventlog.Event) error {
					for _, ev := range events {
						if err := fails(ev); err != nil {
							return err
						}
					}
					for _, ev := range events {
						if err := insert(ctx, db, ev); err != nil {
							return err
						}
					}
					return nil
				}
			}
			c, err := consumer.New(log, &cfg)
			require.NoError(t, err)
			running(t, c)
			parked := func() []consumer.Parked {
				ps, err := consumer.ListParked(ctx, log, cfg.Name)
				require.NoError(t, err)
				return ps
			}
			waitUntil(t, style+": both poisoned events parked", func() bool { return len(parked()) == 2 })

			// A seq that is not parked: refused, nothing asked.
			_, err = consumer.RetryParked(ctx, log, cfg.Name, first, res[0].Event.Seq)
			require.ErrorIs(t, err, consumer.ErrNotParked)
			_, err = consumer.SkipParked(ctx, log, cfg.Name, res[0].Event.Seq)
			require.ErrorIs(t, err, consumer.ErrNotParked)
			_, err = consumer.RetryParked(ctx, log, cfg.Name, 0)
			require.ErrorIs(t, err, consumer.ErrInvalidConfig)
			for _, p := range parked() {
				require.True(t, p.RetryRequestedAt.IsZero())
			}

			// Still failing: one attempt more, the request cleared.
			n, err := consumer.RetryParked(ctx, log, cfg.Name, first)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			waitUntil(t, style+": the retry that fails", func() bool {
				ps := parked()
				return ps[0].Attempts == 2 && ps[0].RetryRequestedAt.IsZero()
			})
			require.Equal(t, 1, parked()[1].Attempts)

			// Skip the second; the first, healed, is handled on retry.
			n, err = consumer.SkipParked(ctx, log, cfg.Name, second)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			healed.Store(true)
			n, err = consumer.RetryParked(ctx, log, cfg.Name)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			waitUntil(t, style+": the retry that succeeds", func() bool { return len(parked()) == 0 })

			var got []int64
			for _, s := range seen(t, db) {
				if s > offset && s < offset+1_000_000 {
					got = append(got, s-offset)
				}
			}
			var want []int64
			for i, r := range res {
				if i != 6 {
					want = append(want, r.Event.Seq)
				}
			}
			slices.Sort(got)
			require.Equal(t, want, got, "every event once, the skipped one never")
		}
	})
}

// A consumer taken over with other kinds or another handler version says
// so in its status, with what it ran with before.
func TestStatusReportsChanges(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend)
		cfg := consumer.Config{Name: "changes", Kinds: []eventlog.Kind{eventlog.KindAgentEvent}, HandleTx: recordTx,
			PollInterval: 10 * time.Millisecond, Logger: quiet}
		status := func() consumer.Status {
			sts, err := consumer.ReadStatus(ctx, log)
			require.NoError(t, err)
			require.Len(t, sts, 1)
			return sts[0]
		}
		runOnce := func(cfg consumer.Config) {
			c, err := consumer.New(log, &cfg)
			require.NoError(t, err)
			stop := running(t, c)
			waitUntil(t, "the takeover", func() bool {
				sts, err := consumer.ReadStatus(ctx, log)
				require.NoError(t, err)
				return len(sts) == 1 && sts[0].Version == max(cfg.Version, 1) && len(sts[0].Kinds) == len(cfg.Kinds)
			})
			require.NoError(t, stop())
		}
		runOnce(cfg)
		runOnce(cfg)
		require.True(t, status().ChangedAt.IsZero(), "the same kinds and version")

		cfg.Kinds, cfg.Version = nil, 2
		runOnce(cfg)
		s := status()
		require.False(t, s.ChangedAt.IsZero())
		require.Equal(t, "kinds=agent_event; version=1", s.ChangedFrom)
	})
}
