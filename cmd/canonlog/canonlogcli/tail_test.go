package canonlogcli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

// TestEndToEndTailFollowsRunningAppends: tail -f, started while an
// `append --file` batch and a single-event transaction are running, prints
// every one of their events once they commit, although they took their
// seqs before the head tail starts from — and prints nothing twice. The
// first events (-n N, --after SEQ) are exactly those committed when tail
// starts. PostgreSQL only: SQLite's single writer cannot commit an event
// above a running append's seqs.
func TestEndToEndTailFollowsRunningAppends(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	for _, tc := range []struct {
		name string
		args func(committed []int64) []string
		// first returns the events tail prints before following, out of
		// those committed when it starts.
		first func(committed []int64) []int64
	}{
		{"Head", func([]int64) []string { return []string{"-n", "0"} },
			func([]int64) []int64 { return nil }},
		{"LastN", func([]int64) []string { return []string{"-n", "1"} },
			func(c []int64) []int64 { return c[len(c)-1:] }},
		{"AfterSeq", func(c []int64) []string { return []string{"--after", fmt.Sprint(c[len(c)-2])} },
			func(c []int64) []int64 { return c[len(c)-1:] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, "postgres")
			db := c.db()
			u := newUser(t, c.url)
			u.ok("", "migrate", "up")
			for i := range 3 {
				u.ok("", "append", "--kind", "effect", "--payload", "{}", "--event-id", fmt.Sprint("before/", i))
			}

			// The batch: its projection writes wait behind a lock on
			// probe_failures, after its events are inserted, so it holds
			// its seqs uncommitted for as long as the test wants.
			batch := filepath.Join(u.dir, "batch.ndjson")
			u.ok("", "gen", "--events", "3000", "--seed", "31337", "--fail-ratio", "0.5", "--out", batch)
			lock, err := db.Beginx()
			require.NoError(t, err)
			t.Cleanup(func() { _ = lock.Rollback() })
			var lockPid int
			require.NoError(t, lock.Get(&lockPid, `SELECT pg_backend_pid()`))
			_, err = lock.Exec(`LOCK TABLE probe_failures IN EXCLUSIVE MODE`)
			require.NoError(t, err)
			appendCmd := u.cmd("append", "--file", batch)
			var appendOut, appendErr bytes.Buffer
			appendCmd.Stdout, appendCmd.Stderr = &appendOut, &appendErr
			appendDone := start(t, appendCmd)
			waitFor(t, "the batch to wait for the probe_failures lock", func() bool {
				var n int
				require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, lockPid))
				return n == 1
			})

			// The single event, in a transaction held open.
			log, err := eventlog.New(db, nil)
			require.NoError(t, err)
			held, err := db.Beginx()
			require.NoError(t, err)
			t.Cleanup(func() { _ = held.Rollback() })
			_, err = log.AppendTx(context.Background(), held, eventlog.Entry{Kind: eventlog.KindEffect,
				Payload: json.RawMessage(`{}`), EventID: "held"})
			require.NoError(t, err)

			// Two more events commit above every seq of the running
			// appends, so that the last one, and what follows the one
			// before, are above them too.
			for i := range 2 {
				u.ok("", "append", "--kind", "effect", "--payload", "{}", "--event-id", fmt.Sprint("mid/", i))
			}
			var committed []int64
			require.NoError(t, db.Select(&committed, `SELECT seq FROM event_log ORDER BY seq`))
			require.Len(t, committed, 5)

			// tail -f under an application name of its own, so the test can
			// tell when it is following.
			appName := "canonlog_tail_" + c.backend.Schema
			tailURL, err := url.Parse(c.url)
			require.NoError(t, err)
			q := tailURL.Query()
			q.Set("application_name", appName)
			tailURL.RawQuery = q.Encode()
			tailer := newUser(t, tailURL.String())
			tail := tailer.cmd(append([]string{"tail", "-f", "-o", "ndjson", "--poll-interval", "20ms"}, tc.args(committed)...)...)
			var out, errOut testio.SyncBuffer
			tail.Stdout, tail.Stderr = &out, &errOut
			tailDone := start(t, tail)
			// The follower's page query runs only after the start position
			// is taken.
			waitFor(t, "tail -f to follow", func() bool {
				var n int
				require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM pg_stat_activity
WHERE application_name = $1 AND query LIKE '%ORDER BY tx_id, seq%'`, appName))
				return n > 0
			})

			// Both commit after tail started, then one last event.
			require.NoError(t, held.Commit())
			require.NoError(t, lock.Rollback())
			select {
			case <-appendDone.done:
				require.NoError(t, appendDone.err, "append: %s", appendErr.String())
			case <-time.After(followWait):
				t.Fatal("the batch did not finish once the lock was released")
			}
			require.Contains(t, appendOut.String(), "appended 3000 new events")
			u.ok("", "append", "--kind", "effect", "--payload", "{}", "--event-id", "late")
			var late int64
			require.NoError(t, db.Get(&late, `SELECT seq FROM event_log WHERE event_id = 'late'`))
			waitFor(t, "tail -f to print the last event", func() bool {
				return strings.Contains(out.String(), `"event_id":"late"`)
			})
			require.NoError(t, tail.Process.Signal(os.Interrupt))
			select {
			case <-tailDone.done:
				var ee *exec.ExitError
				require.ErrorAs(t, tailDone.err, &ee, "tail: %s", errOut.String())
				require.Equal(t, exitInterrupted, ee.ExitCode(), "tail: %s", errOut.String())
			case <-time.After(30 * time.Second):
				t.Fatal("tail -f did not stop when interrupted")
			}

			var all []int64
			require.NoError(t, db.Select(&all, `SELECT seq FROM event_log ORDER BY seq`))
			require.Len(t, all, 5+3000+1+1)
			var after []int64 // committed after tail started
			for _, seq := range all {
				if !slices.Contains(committed, seq) {
					after = append(after, seq)
				}
			}
			require.Len(t, after, 3000+1+1)
			got := ndjsonSeqs(t, out.String())
			first := append([]int64{}, tc.first(committed)...)
			require.GreaterOrEqual(t, len(got), len(first), "tail printed %d events", len(got))
			require.Equal(t, first, got[:len(first)], "the first events: those committed at the start, in seq order")
			require.ElementsMatch(t, after, got[len(first):], "then every event committed after the start, once")
			require.Less(t, after[0], committed[len(committed)-2], "the running appends held seqs below the start")
		})
	}
}

// process is a started command; err is set once done is closed.
type process struct {
	done chan struct{}
	err  error
}

// start starts cmd and kills it when the test ends, if it is still
// running then.
func start(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	require.NoError(t, cmd.Start())
	p := &process{done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitFor polls cond until it holds, failing after followWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(followWait)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		time.Sleep(20 * time.Millisecond)
	}
}
