package migrations_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// The helper process: the test binary started again with envHelper set runs
// TestMigrateHelperProcess alone, which migrates the database at envURL (or
// holds its migration lock) the way a second service replica would.
const (
	envHelper = "CANONLOG_MIGRATE_HELPER" // "up", "projection" or "hold"; unset in a normal test run
	envURL    = "CANONLOG_MIGRATE_URL"
)

// Runner kinds: how a runner migrates.
const (
	// kindUp is migrations.Up with demoSet, as a library user calls it.
	kindUp = "up"
	// kindProjection is projection.Migrate with probe_failures registered,
	// as `canonlog migrate up` and a service starting with fx run it.
	kindProjection = "projection"
	// kindHold takes the SQLite migration lock and keeps it until killed.
	kindHold = "hold"
)

// runMigrate opens url and migrates it the kind's way, on a pool of its
// own: opening belongs to the race, as it does for processes starting
// together.
func runMigrate(ctx context.Context, url, kind string) ([]migrations.Result, error) {
	db, err := eventlog.OpenDB(ctx, url)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	switch kind {
	case kindUp:
		return migrations.Up(ctx, db, demoSet())
	case kindProjection:
		reg, err := projection.NewRegistry(probefailures.New())
		if err != nil {
			return nil, err
		}
		log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
		if err != nil {
			return nil, err
		}
		defer log.Close()
		return projection.Migrate(ctx, log, reg)
	}
	return nil, fmt.Errorf("unknown runner kind %q", kind)
}

func TestMigrateHelperProcess(t *testing.T) {
	kind := os.Getenv(envHelper)
	if kind == "" {
		t.Skip("helper process of TestMigrateConcurrent and TestMigrateLockSQLite")
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		_ = out.Flush()
	}
	ctx := context.Background()
	if kind == kindHold {
		db, err := eventlog.OpenDB(ctx, os.Getenv(envURL))
		if err != nil {
			say("error %v", err)
			return
		}
		if _, err := migrations.LockSQLite(ctx, db.DB); err != nil {
			say("error %v", err)
			return
		}
		say("ready")
		_, _ = io.Copy(io.Discard, os.Stdin) // until killed
		return
	}
	// Start when the parent closes stdin, together with the other runners.
	say("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	res, err := runMigrate(ctx, os.Getenv(envURL), kind)
	if err != nil {
		say("error %v", err)
		return
	}
	data, err := json.Marshal(res)
	if err != nil {
		say("error %v", err)
		return
	}
	say("result %s", data)
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its stdout, line by line; closed at EOF
	wait  sync.Once
	err   error
}

// startHelper starts a helper process of the kind on url and returns once
// it said "ready". It is killed when t ends, if still running.
func startHelper(t *testing.T, url, kind string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateHelperProcess$", "-test.count=1")
	// A race-enabled binary sleeps a second before it exits (GORACE
	// atexit_sleep_ms); the helper has nothing left to report by then.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), envHelper+"="+kind, envURL+"="+url, "GORACE="+gorace)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := new(syncBuffer)
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	h := &helper{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		h.finish()
	})
	line, err := h.next()
	require.NoError(t, err, "helper %s: stderr: %s", kind, stderr.String())
	require.Equal(t, "ready", line, "helper %s: stderr: %s", kind, stderr.String())
	return h
}

// next returns the helper's next line that is one of its own ("ready",
// "result …", "error …"), skipping the test framework's.
func (h *helper) next() (string, error) {
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				return "", fmt.Errorf("helper ended without a word: %v", h.finish())
			}
			if l == "ready" || strings.HasPrefix(l, "result ") || strings.HasPrefix(l, "error ") {
				return l, nil
			}
		case <-timeout:
			return "", errors.New("helper said nothing for a minute")
		}
	}
}

func (h *helper) finish() error {
	h.wait.Do(func() {
		_ = h.stdin.Close()
		for range h.lines {
		}
		h.err = h.cmd.Wait()
	})
	return h.err
}

// result returns what the run of a started migrating helper (its stdin
// closed) returned. It may run off the test's goroutine: it reports
// failures of the helper itself as errors too.
func (h *helper) result() ([]migrations.Result, error) {
	line, err := h.next()
	if err != nil {
		return nil, err
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return nil, errors.New(msg)
	}
	var res []migrations.Result
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "result ")), &res); err != nil {
		return nil, fmt.Errorf("helper result %q: %w", line, err)
	}
	if err := h.finish(); err != nil {
		return nil, fmt.Errorf("helper: %w", err)
	}
	return res, nil
}

// syncBuffer is a bytes.Buffer that a process can write while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func requireIntegrity(t *testing.T, db *sqlx.DB) {
	t.Helper()
	var res []string
	require.NoError(t, db.Select(&res, `PRAGMA integrity_check`))
	require.Equal(t, []string{"ok"}, res)
}

// sqliteLockIsFree reports whether the migration lock of db's SQLite file
// can be taken (waiting a little) and releases it again.
func sqliteLockIsFree(t *testing.T, db *sqlx.DB) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	unlock, err := migrations.LockSQLite(ctx, db.DB)
	if errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	require.NoError(t, err)
	unlock()
	return true
}
