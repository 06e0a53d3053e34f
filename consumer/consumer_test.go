package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func setup(t *testing.T, backend string) (*eventlog.Log, *sqlx.DB) {
	t.Helper()
	db := dbtest.New(t, backend).Migrated(t)
	log, err := eventlog.New(db, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	_, err = db.Exec(`CREATE TABLE seen (seq BIGINT PRIMARY KEY)`)
	require.NoError(t, err)
	return log, db
}

func agent(host, payload string) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host, Payload: json.RawMessage(payload)}
}

func effect() eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{}`)}
}

// recordTx is a transactional handler: one row per event in seen, so a
// second delivery fails on the primary key.
func recordTx(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	for _, ev := range events {
		if strings.Contains(string(ev.Payload), "poison") {
			return fmt.Errorf("poisoned event %d", ev.Seq)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO seen (seq) VALUES (?)`), ev.Seq); err != nil {
			return err
		}
	}
	return nil
}

// running runs c until the returned stop is called; stop returns Run's
// error.
func running(t *testing.T, c *consumer.Consumer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitUntil polls cond until it holds; it fails the test after a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func seen(t *testing.T, db *sqlx.DB) []int64 {
	t.Helper()
	var out []int64
	require.NoError(t, db.Select(&out, `SELECT seq FROM seen ORDER BY seq`))
	return out
}

func agentSeqs(t *testing.T, db *sqlx.DB) []int64 {
	t.Helper()
	var out []int64
	require.NoError(t, db.Select(&out, `SELECT seq FROM event_log WHERE kind = 'agent_event' ORDER BY seq`))
	return out
}

// A transactional consumer handles every event of its kinds exactly once:
// while writers append, across a restart, and on PostgreSQL an event that
// took its seq before others and commits after them.
func TestTransactional(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend)
		var batch []eventlog.Entry
		for i := range 150 {
			batch = append(batch, agent(fmt.Sprint("h", i%5), fmt.Sprintf(`{"n":%d}`, i)), effect())
		}
		_, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)

		newConsumer := func() *consumer.Consumer {
			c, err := consumer.New(log, &consumer.Config{Name: "recorder", Kinds: []eventlog.Kind{eventlog.KindAgentEvent},
				HandleTx: recordTx, PageSize: 40, PollInterval: 20 * time.Millisecond, Logger: quiet})
			require.NoError(t, err)
			return c
		}
		// On PostgreSQL an append that takes its seq now and commits
		// after the events appended after it.
		var late *sqlx.Tx
		if backend == "postgres" {
			late, err = db.BeginTxx(ctx, nil)
			require.NoError(t, err)
			_, err = log.AppendTx(ctx, late, agent("late", `{"late":true}`))
			require.NoError(t, err)
		}
		stop := running(t, newConsumer())
		var writers sync.WaitGroup
		for w := range 3 {
			writers.Go(func() {
				for i := range 40 {
					if _, err := log.Append(ctx, agent(fmt.Sprint("w", w), fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		writers.Wait()
		want := 150 + 3*40
		if late != nil {
			// The followers' horizon: nothing after the open
			// transaction is delivered until it ends.
			require.NoError(t, late.Commit())
			want++
		}
		waitUntil(t, "the consumer to handle the events", func() bool { return len(seen(t, db)) == want })
		require.NoError(t, stop())
		require.Equal(t, agentSeqs(t, db), seen(t, db))

		// Restarted, it resumes after what it handled.
		_, err = log.AppendBatch(ctx, []eventlog.Entry{agent("h", `{"after":1}`), effect(), agent("h", `{"after":2}`)})
		require.NoError(t, err)
		stop = running(t, newConsumer())
		waitUntil(t, "the restarted consumer", func() bool { return len(seen(t, db)) == want+2 })
		require.NoError(t, stop())
		require.Equal(t, agentSeqs(t, db), seen(t, db))

		sts, err := consumer.ReadStatus(ctx, log)
		require.NoError(t, err)
		require.Len(t, sts, 1)
		last := agentSeqs(t, db)
		require.Equal(t, "recorder", sts[0].Name)
		require.Equal(t, last[len(last)-1], sts[0].HandledSeq)
		require.Zero(t, sts[0].LagEvents)
		require.EqualValues(t, 2, sts[0].Generation, "two runs")
		require.Equal(t, []eventlog.Kind{eventlog.KindAgentEvent}, sts[0].Kinds)
		require.Zero(t, sts[0].FailedSeq)
	})
}

// An external consumer gets each event one at a time, and again after its
// handler failed on it; the position is saved after the handler
// succeeds.
func TestExternal(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend)
		var batch []eventlog.Entry
		for i := range 60 {
			batch = append(batch, agent("h", fmt.Sprintf(`{"n":%d}`, i)), effect())
		}
		res, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)
		flaky := res[20].Event.Seq // fails on its first delivery

		var mu sync.Mutex
		calls := map[int64]int{}
		var order []int64
		c, err := consumer.New(log, &consumer.Config{Name: "external", Kinds: []eventlog.Kind{eventlog.KindAgentEvent},
			PageSize: 7, PollInterval: 20 * time.Millisecond, MinBackoff: time.Millisecond, Logger: quiet,
			Handle: func(_ context.Context, ev eventlog.Event) error {
				mu.Lock()
				defer mu.Unlock()
				calls[ev.Seq]++
				if ev.Seq == flaky && calls[ev.Seq] == 1 {
					return errors.New("downstream unavailable")
				}
				order = append(order, ev.Seq)
				return nil
			}})
		require.NoError(t, err)
		stop := running(t, c)
		want := agentSeqs(t, db)
		waitUntil(t, "every event", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(order) >= len(want)
		})
		require.NoError(t, stop())
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, want, order, "each event handled once, in the log's order")
		require.Equal(t, 2, calls[flaky])
		sts, err := consumer.ReadStatus(ctx, log)
		require.NoError(t, err)
		require.Equal(t, want[len(want)-1], sts[0].HandledSeq)
	})
}

// batchOf makes a HandleBatch of a Handle: it stops at the first event
// handle fails on.
func batchOf(handle consumer.HandlerFunc) consumer.BatchHandlerFunc {
	return func(ctx context.Context, events []eventlog.Event) error {
		for _, ev := range events {
			if err := handle(ctx, ev); err != nil {
				return err
			}
		}
		return nil
	}
}

// HandleBatch gets pages whole, in the log's order; a page it fails on is
// given to it again one event at a time, so the events of a page that
// failed are handled, and saved, once each.
func TestBatch(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend)
		var batch []eventlog.Entry
		for i := range 60 {
			batch = append(batch, agent("h", fmt.Sprintf(`{"n":%d}`, i)), effect())
		}
		res, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)
		flaky := res[30].Event.Seq // fails the page it is in, once

		var (
			mu    sync.Mutex
			pages [][]int64
			order []int64
			fails int
		)
		c, err := consumer.New(log, &consumer.Config{Name: "batch", Kinds: []eventlog.Kind{eventlog.KindAgentEvent},
			PageSize: 7, PollInterval: 20 * time.Millisecond, MinBackoff: time.Millisecond, Logger: quiet,
			HandleBatch: func(_ context.Context, events []eventlog.Event) error {
				mu.Lock()
				defer mu.Unlock()
				var page []int64
				for _, ev := range events {
					page = append(page, ev.Seq)
				}
				pages = append(pages, page)
				if slices.Contains(page, flaky) && fails == 0 {
					fails++
					return errors.New("downstream unavailable")
				}
				order = append(order, page...)
				return nil
			}})
		require.NoError(t, err)
		stop := running(t, c)
		want := agentSeqs(t, db)
		waitUntil(t, "every event", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(order) >= len(want)
		})
		require.NoError(t, stop())
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, want, order, "each event handled once, in the log's order")
		require.Greater(t, len(pages[0]), 1, "a page whole")
		require.Equal(t, want[:len(pages[0])], pages[0], "a page whole")
		i := slices.IndexFunc(pages, func(p []int64) bool { return slices.Contains(p, flaky) })
		require.Greater(t, len(pages[i]), 1, "the page that failed")
		for _, p := range pages[i+1 : i+1+len(pages[i])] {
			require.Len(t, p, 1, "its events, one at a time, after the failure")
		}
		sts, err := consumer.ReadStatus(ctx, log)
		require.NoError(t, err)
		require.Equal(t, want[len(want)-1], sts[0].HandledSeq)
	})
}

// A handler that keeps failing on an event stops the consumer before it
// (FailStop), or the event is parked and the rest handled (FailPark); in
// every style.
func TestFailurePolicies(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend)
		var batch []eventlog.Entry
		for i := range 30 {
			payload := fmt.Sprintf(`{"n":%d}`, i)
			if i == 17 {
				payload = `{"poison":true}`
			}
			batch = append(batch, agent("h", payload))
		}
		res, err := log.AppendBatch(ctx, batch)
		require.NoError(t, err)
		poison := res[17].Event.Seq
		external := func(ctx context.Context, ev eventlog.Event) error {
			if strings.Contains(string(ev.Payload), "poison") {
				return errors.New("poisoned")
			}
			_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO seen (seq) VALUES (?)`), ev.Seq+1_000_000)
			return err
		}
		// idempotent is the batch style's handler: a page that failed
		// part-way is given to it again, its first events included.
		idempotent := func(ctx context.Context, ev eventlog.Event) error {
			if strings.Contains(string(ev.Payload), "poison") {
				return errors.New("poisoned")
			}
			_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO seen (seq) VALUES (?) ON CONFLICT (seq) DO NOTHING`), ev.Seq+2_000_000)
			return err
		}
		base := consumer.Config{PageSize: 8, PollInterval: 10 * time.Millisecond, Attempts: 3,
			MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Logger: quiet}

		// Transactional, FailStop: the page before the poison commits,
		// then Run stops on it and says so.
		cfg := base
		cfg.Name, cfg.HandleTx = "stops_tx", recordTx
		c, err := consumer.New(log, &cfg)
		require.NoError(t, err)
		err = c.Run(ctx)
		var he *consumer.HandlerError
		require.ErrorAs(t, err, &he)
		require.Equal(t, poison, he.Seq)
		require.Equal(t, 3, he.Attempts)
		require.Equal(t, res[16].Event.Seq, seen(t, db)[len(seen(t, db))-1])
		require.Len(t, seen(t, db), 17)
		sts, err := consumer.ReadStatus(ctx, log)
		require.NoError(t, err)
		require.Equal(t, poison, sts[0].FailedSeq)
		require.Contains(t, sts[0].Failure, "poisoned event")

		// External and batch, FailStop.
		for _, style := range []string{"ext", "batch"} {
			cfg = base
			cfg.Name = "stops_" + style
			if style == "ext" {
				cfg.Handle = external
			} else {
				cfg.HandleBatch = batchOf(idempotent)
			}
			c, err = consumer.New(log, &cfg)
			require.NoError(t, err)
			require.ErrorAs(t, c.Run(ctx), &he)
			require.Equal(t, poison, he.Seq)
			sts, err = consumer.ReadStatus(ctx, log)
			require.NoError(t, err)
			i := slices.IndexFunc(sts, func(s consumer.Status) bool { return s.Name == cfg.Name })
			require.Equal(t, res[16].Event.Seq, sts[i].HandledSeq, "the events before the poison are saved, one at a time")
			require.Equal(t, poison, sts[i].FailedSeq)
		}

		// Every style, FailPark: everything else is handled.
		_, err = db.Exec(`DELETE FROM seen`)
		require.NoError(t, err)
		styles := []string{"tx", "ext", "batch"}
		for _, style := range styles {
			cfg = base
			cfg.Name, cfg.OnFailure = "parks_"+style, consumer.FailPark
			switch style {
			case "tx":
				cfg.HandleTx = recordTx
			case "ext":
				cfg.Handle = external
			default:
				cfg.HandleBatch = batchOf(idempotent)
			}
			c, err = consumer.New(log, &cfg)
			require.NoError(t, err)
			stop := running(t, c)
			waitUntil(t, "the "+style+" consumer to pass the poison", func() bool {
				sts, err := consumer.ReadStatus(ctx, log)
				require.NoError(t, err)
				for _, s := range sts {
					if s.Name == cfg.Name {
						return s.HandledSeq == res[29].Event.Seq
					}
				}
				return false
			})
			require.NoError(t, stop())
			parked, err := consumer.ListParked(ctx, log, cfg.Name)
			require.NoError(t, err)
			require.Len(t, parked, 1)
			require.Equal(t, poison, parked[0].Seq)
			require.Equal(t, 3, parked[0].Attempts)
		}
		var handled []int64
		for _, s := range seen(t, db) {
			handled = append(handled, s%1_000_000)
		}
		slices.Sort(handled)
		var want []int64
		for i, r := range res {
			if i != 17 {
				want = append(want, r.Event.Seq, r.Event.Seq, r.Event.Seq)
			}
		}
		slices.Sort(want)
		require.Equal(t, want, handled, "each consumer handled everything but the poison, once")
		sts, err = consumer.ReadStatus(ctx, log)
		require.NoError(t, err)
		for _, s := range sts {
			if strings.HasPrefix(s.Name, "parks_") {
				require.Equal(t, 1, s.Parked)
				require.Zero(t, s.FailedSeq)
			}
		}
	})
}

// Reset moves the position and deposes the running instance, which stops
// with ErrDeposed without moving the position again; the next run handles
// the events after the reset's seq.
func TestResetDeposes(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend)
		var mu sync.Mutex
		var got []int64
		c, err := consumer.New(log, &consumer.Config{Name: "resettable", PollInterval: 10 * time.Millisecond, Logger: quiet,
			Handle: func(_ context.Context, ev eventlog.Event) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, ev.Seq)
				return nil
			}})
		require.NoError(t, err)
		_, err = log.AppendBatch(ctx, []eventlog.Entry{effect(), effect(), effect()})
		require.NoError(t, err)
		ctxRun, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.Run(ctxRun) }()
		waitUntil(t, "three events", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 })

		require.NoError(t, consumer.Reset(ctx, log, "resettable", 1))
		_, err = log.Append(ctx, effect())
		require.NoError(t, err)
		select {
		case err := <-done:
			require.ErrorIs(t, err, consumer.ErrDeposed)
		case <-time.After(time.Minute):
			t.Fatal("the deposed instance did not stop")
		}
		sts, err := consumer.ReadStatus(ctx, log)
		require.NoError(t, err)
		require.EqualValues(t, 1, sts[0].HandledSeq, "the deposed instance saved nothing after the reset")

		mu.Lock()
		got = nil
		mu.Unlock()
		stop := running(t, c)
		waitUntil(t, "events 2 to 4", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 })
		require.NoError(t, stop())
		require.Equal(t, []int64{2, 3, 4}, got)

		require.ErrorIs(t, consumer.Reset(ctx, log, "nobody", 0), consumer.ErrUnknownConsumer)
		require.ErrorIs(t, consumer.Reset(ctx, log, "resettable", -1), consumer.ErrInvalidConfig)
		_ = db
	})
}

// On PostgreSQL a second instance of a consumer waits while the first
// runs, and takes over when it stops: the effects are exactly once.
func TestOneActiveInstance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log, db := setup(t, "postgres")
	newConsumer := func() *consumer.Consumer {
		c, err := consumer.New(log, &consumer.Config{Name: "single", HandleTx: recordTx, PollInterval: 10 * time.Millisecond, Logger: quiet})
		require.NoError(t, err)
		return c
	}
	_, err := log.AppendBatch(ctx, []eventlog.Entry{agent("h", `{}`), agent("h", `{}`)})
	require.NoError(t, err)
	stopFirst := running(t, newConsumer())
	waitUntil(t, "the first instance", func() bool { return len(seen(t, db)) == 2 })
	stopSecond := running(t, newConsumer())
	// The second waits on the lock: the generation stays the first's.
	time.Sleep(100 * time.Millisecond)
	sts, err := consumer.ReadStatus(ctx, log)
	require.NoError(t, err)
	require.EqualValues(t, 1, sts[0].Generation)

	require.NoError(t, stopFirst())
	_, err = log.AppendBatch(ctx, []eventlog.Entry{agent("h", `{}`), agent("h", `{}`)})
	require.NoError(t, err)
	waitUntil(t, "the second instance", func() bool { return len(seen(t, db)) == 4 })
	require.NoError(t, stopSecond())
	sts, err = consumer.ReadStatus(ctx, log)
	require.NoError(t, err)
	require.EqualValues(t, 2, sts[0].Generation)
	require.Equal(t, agentSeqs(t, db), seen(t, db))
}

// New refuses a configuration it cannot run, saying what to fix.
func TestNewRefuses(t *testing.T) {
	t.Parallel()
	log, _ := setup(t, "sqlite")
	h := func(context.Context, eventlog.Event) error { return nil }
	for name, tc := range map[string]struct {
		cfg  consumer.Config
		want string
	}{
		"no name":       {consumer.Config{Handle: h}, "Name must be"},
		"bad name":      {consumer.Config{Name: "Gate-Alerts", Handle: h}, "Name must be"},
		"no handler":    {consumer.Config{Name: "x"}, "exactly one of Handle"},
		"two handlers":  {consumer.Config{Name: "x", Handle: h, HandleTx: recordTx}, "exactly one of Handle"},
		"two external":  {consumer.Config{Name: "x", Handle: h, HandleBatch: batchOf(h)}, "exactly one of Handle"},
		"page":          {consumer.Config{Name: "x", Handle: h, PageSize: eventlog.MaxPageSize + 1}, "PageSize is"},
		"attempts":      {consumer.Config{Name: "x", Handle: h, Attempts: -1}, "Attempts is -1"},
		"backoff order": {consumer.Config{Name: "x", Handle: h, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff 1s is more than MaxBackoff 1ms"},
		"policy":        {consumer.Config{Name: "x", Handle: h, OnFailure: 7}, "OnFailure is 7"},
		"kind":          {consumer.Config{Name: "x", Handle: h, Kinds: []eventlog.Kind{"Not A Kind"}}, "Not A Kind"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := consumer.New(log, &tc.cfg)
			require.ErrorIs(t, err, consumer.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := consumer.New(log, nil)
	require.ErrorIs(t, err, consumer.ErrInvalidConfig)
}
