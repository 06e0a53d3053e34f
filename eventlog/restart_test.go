package eventlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pgcluster"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// restartWriters appends from a few goroutines, each retrying a failed
// append with the same entries (same event ids) until it succeeds, and
// records what it saw.
type restartWriters struct {
	log *eventlog.Log

	mu        sync.Mutex
	acks      map[string]int64 // event id -> seq acknowledged
	landed    int              // entries a retry found already stored (an ambiguous failure had committed)
	errs      []error          // every failed attempt
	fatal     error            // the first error that was not retryable
	ackedOnce int              // appends acknowledged (first success of each)
}

func (w *restartWriters) acked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ackedOnce
}

func (w *restartWriters) failures() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.errs)
}

// run appends until stop is closed, alternating single appends and
// batches of three, and returns once its last entries are acknowledged.
// Every other single append is of a kind probe_failures does not
// consume: one autocommitted statement, whose lost answers a retry must
// resolve as well as a lost COMMIT's.
func (w *restartWriters) run(id int, stop <-chan struct{}) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		size := 1 + 2*(n%2)
		entries := make([]eventlog.Entry, size)
		for i := range entries {
			status := []string{"fail", "pass"}[(n+i)%2]
			entries[i] = eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: fmt.Sprintf("host-%d", id), RolloutID: "r1",
				EventID: fmt.Sprintf("w%d-%d-%d", id, n, i),
				Payload: json.RawMessage(`{"type":"ProbeResult","mode":"enforce","status":"` + status + `","probe_name":"p","observed_at":"2026-05-16T01:00:00Z",` +
					`"sub_results":[{"control_id":"C-` + fmt.Sprint(n) + `","framework":"cis","status":"fail"}]}`)}
		}
		if n%4 == 2 {
			entries[0].Kind, entries[0].HostID, entries[0].Payload = eventlog.KindPlanAction, "", json.RawMessage(`{"step":`+fmt.Sprint(n)+`}`)
		}
		if !w.appendUntilAcked(entries) {
			return
		}
	}
}

func (w *restartWriters) appendUntilAcked(entries []eventlog.Entry) bool {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := w.log.AppendBatch(ctx, entries)
		cancel()
		w.mu.Lock()
		if err != nil {
			w.errs = append(w.errs, err)
			if !eventlog.Retryable(err) {
				if w.fatal == nil {
					w.fatal = err
				}
				w.mu.Unlock()
				return false
			}
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for i, r := range res {
			if r.Duplicate {
				if attempt == 0 && w.fatal == nil {
					w.fatal = fmt.Errorf("fresh event id %s reported as duplicate", entries[i].EventID)
				}
				w.landed++
			}
			if prev, ok := w.acks[entries[i].EventID]; ok && w.fatal == nil {
				w.fatal = fmt.Errorf("event id %s acknowledged twice (seqs %d and %d)", entries[i].EventID, prev, r.Event.Seq)
			}
			w.acks[entries[i].EventID] = r.Event.Seq
		}
		w.ackedOnce++
		w.mu.Unlock()
		return true
	}
}

// The server restarts (crashes, and shuts down fast) under appending
// writers: they see retryable errors that say what happened, recover
// through the same pool, and their retries land every entry exactly once.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	c := pgcluster.Start(t)
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, c.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	reg := projection.Must(projection.NewRegistry(probefailures.New()))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	_, err = projection.Migrate(ctx, log, reg)
	require.NoError(t, err)

	w := &restartWriters{log: log, acks: map[string]int64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for id := range 3 {
		wg.Go(func() { w.run(id, stop) })
	}
	stopped := false
	stopWriters := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopWriters)

	waitAcks := func(n int, what string) {
		t.Helper()
		require.Eventually(t, func() bool { return w.acked() >= n || w.fatalErr() != nil },
			30*time.Second, 10*time.Millisecond, "writers did not get %d appends acknowledged %s", n, what)
		require.NoError(t, w.fatalErr())
	}
	waitAcks(30, "before the first restart")
	for i, mode := range []pgcluster.Mode{pgcluster.Immediate, pgcluster.Fast, pgcluster.Immediate, pgcluster.Fast} {
		failed := w.failures()
		require.NoError(t, c.Stop(mode))
		// Keep the server down until the writers have met the outage.
		require.Eventually(t, func() bool { return w.failures() > failed }, 30*time.Second, 10*time.Millisecond,
			"no writer noticed the %s shutdown", mode)
		require.NoError(t, c.Resume())
		// Acks resume on the same pool, the same Log, the same statements.
		waitAcks(w.acked()+30, fmt.Sprintf("after restart %d (%s)", i+1, mode))
	}
	stopWriters()
	require.NoError(t, w.fatalErr())

	// Every failure was retryable and says why.
	reasons := []string{"bad connection", "connection refused", "shutting down", "terminating connection", "starting up", "not yet accepting connections", "EOF", "connection reset", "broken pipe"}
	seen := map[string]int{}
	for _, err := range w.errs {
		require.True(t, eventlog.Retryable(err), "not retryable: %v", err)
		require.True(t, containsAny(err.Error(), reasons), "unclear error: %v", err)
		seen[err.Error()]++
	}
	refused := false
	for msg := range seen {
		refused = refused || strings.Contains(msg, "connection refused")
	}
	require.True(t, refused, "the writers never met the server down: %v", seen)
	t.Logf("%d appends acknowledged, %d failed attempts, %d entries found already stored by a retry; errors: %v",
		w.ackedOnce, len(w.errs), w.landed, seen)

	// Exactly the acknowledged events are stored, each once, at its seq.
	var stored []struct {
		EventID string `db:"event_id"`
		Seq     int64  `db:"seq"`
	}
	require.NoError(t, db.SelectContext(ctx, &stored, `SELECT event_id, seq FROM event_log ORDER BY seq`))
	require.Len(t, stored, len(w.acks))
	for _, s := range stored {
		seq, ok := w.acks[s.EventID]
		require.True(t, ok, "stored event %s was never acknowledged", s.EventID)
		require.Equal(t, seq, s.Seq, s.EventID)
	}

	res, err := projection.Verify(ctx, log, reg, nil)
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.True(t, res[0].Equal, "probe_failures differs from a rebuild: %+v", res[0])
	var rows int
	require.NoError(t, db.GetContext(ctx, &rows, `SELECT COUNT(*) FROM probe_failures`))
	require.Positive(t, rows)
}

func (w *restartWriters) fatalErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fatal
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
