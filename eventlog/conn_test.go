package eventlog_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

func TestRetryable(t *testing.T) {
	t.Parallel()
	pqErr := func(code string) error { return &pq.Error{Severity: "ERROR", Code: pqerror.Code(code), Message: "m"} }
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &net.AddrError{Err: "connect: connection refused"}}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"serialization failure", pqErr("40001"), true},
		{"deadlock", pqErr("40P01"), true},
		{"admin shutdown", pqErr("57P01"), true},
		{"crash shutdown", pqErr("57P02"), true},
		{"cannot connect now", pqErr("57P03"), true},
		{"too many connections", pqErr("53300"), true},
		{"too many connections wrapped", fmt.Errorf("eventlog: begin transaction: %w", pqErr("53300")), true},
		// A configured ceiling (max_wal_senders, replication slots) that
		// waiting does not lift.
		{"configuration limit exceeded", pqErr("53400"), false},
		{"out of memory", pqErr("53200"), false},
		{"disk full", pqErr("53100"), false},
		{"connection exception", pqErr("08000"), true},
		{"connection failure", pqErr("08006"), true},
		{"connection does not exist", pqErr("08003"), true},
		{"bad connection", driver.ErrBadConn, true},
		{"bad connection wrapped", fmt.Errorf("eventlog: append: %w", driver.ErrBadConn), true},
		{"bad connection joined with rollback", errors.Join(fmt.Errorf("commit: %w", driver.ErrBadConn), fmt.Errorf("rollback: %w", driver.ErrBadConn)), true},
		{"EOF", fmt.Errorf("read: %w", io.EOF), true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"connection refused", fmt.Errorf("begin transaction: %w", refused), true},
		{"connection reset", reset, true},
		{"unique violation", pqErr("23505"), false},
		{"check violation", pqErr("23514"), false},
		{"foreign key violation", pqErr("23503"), false},
		{"insufficient privilege", pqErr("42501"), false},
		{"undefined table", pqErr("42P01"), false},
		{"query canceled", pqErr("57014"), false},
		{"invalid kind", &eventlog.EntryError{Field: "kind", Err: eventlog.ErrInvalidKind}, false},
		{"invalid payload", &eventlog.EntryError{Field: "payload", Err: eventlog.ErrInvalidPayload}, false},
		{"payload too large", &eventlog.EntryError{Field: "payload", Err: eventlog.ErrPayloadTooLarge}, false},
		{"invalid payload wrapping an EOF", &eventlog.EntryError{Field: "payload", Err: fmt.Errorf("%w: %w", eventlog.ErrInvalidPayload, io.ErrUnexpectedEOF)}, false},
		{"event id conflict", &eventlog.ConflictError{EventID: "x", Seq: 1, Field: "payload"}, false},
		{"context canceled", fmt.Errorf("begin transaction: %w", context.Canceled), false},
		// context.DeadlineExceeded satisfies net.Error: it must still not count.
		{"context deadline", context.DeadlineExceeded, false},
		{"tx done", sql.ErrTxDone, false},
		{"no rows", sql.ErrNoRows, false},
		{"plain error", errors.New("boom"), false},
	} {
		require.Equal(t, tc.want, eventlog.Retryable(tc.err), tc.name)
	}
}

// TestTooManyConnections: a server refusing a connection because a limit
// on connections is reached (here a role's CONNECTION LIMIT; the
// server's max_connections answers with the same SQLSTATE, 53300) is a
// transient failure.
func TestTooManyConnections(t *testing.T) {
	t.Parallel()
	admin := dbtest.Admin(t)
	role := dbtest.NewName()
	_, err := admin.Exec(`CREATE ROLE ` + pq.QuoteIdentifier(role) + ` LOGIN CONNECTION LIMIT 0`)
	require.NoError(t, err)
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP ROLE IF EXISTS ` + pq.QuoteIdentifier(role)); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	u, err := dbtest.URL(role, "public")
	require.NoError(t, err)
	db, err := eventlog.OpenDB(context.Background(), u)
	if db != nil {
		_ = db.Close()
	}
	var pqErr *pq.Error
	require.ErrorAs(t, err, &pqErr)
	require.Equal(t, "53300", string(pqErr.Code), "%v", err)
	require.True(t, eventlog.Retryable(err), "%v", err)
}

// killHook terminates the PostgreSQL backend serving an append from inside
// the append's transaction, after the entries are written and before the
// commit, when armed.
type killHook struct {
	admin *sqlx.DB
	mu    sync.Mutex
	armed bool
	pid   int
	err   error
}

func (h *killHook) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.pid, h.err = true, 0, nil
}

func (h *killHook) AfterAppend(ctx context.Context, tx *sqlx.Tx, _ []eventlog.Event) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.armed {
		return nil
	}
	h.armed = false
	if err := tx.GetContext(ctx, &h.pid, `SELECT pg_backend_pid()`); err != nil {
		h.err = err
		return err
	}
	h.err = terminate(ctx, h.admin, h.pid)
	// Return nil: the failure must come from the lost connection.
	return nil
}

// terminate ends the backend pid from admin and waits until it is gone.
func terminate(ctx context.Context, admin *sqlx.DB, pid int) error {
	var ok bool
	if err := admin.GetContext(ctx, &ok, `SELECT pg_terminate_backend($1, 30000)`, pid); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("backend %d was not terminated", pid)
	}
	return nil
}

func TestLostConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := dbtest.Admin(t)
	hook := &killHook{admin: admin}
	log, db := setup(t, "postgres", &eventlog.Config{Hook: hook})

	countID := func(id string) int {
		var n int
		require.NoError(t, db.GetContext(ctx, &n, `SELECT COUNT(*) FROM event_log WHERE event_id = $1`, id))
		return n
	}
	entries := func(prefix string, n int) []eventlog.Entry {
		out := make([]eventlog.Entry, n)
		for i := range out {
			out[i] = eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "h", RolloutID: "r1",
				Payload: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`), EventID: prefix + "-" + strconv.Itoa(i)}
		}
		return out
	}
	// requireLost checks a failed attempt: a retryable error, and none of
	// the entries stored.
	requireLost := func(t *testing.T, err error, es []eventlog.Entry) {
		t.Helper()
		require.Error(t, err)
		require.True(t, eventlog.Retryable(err), "not retryable: %v", err)
		t.Logf("lost connection reported as: %v", err)
		for _, e := range es {
			require.Zero(t, countID(e.EventID), "the failed attempt stored %s", e.EventID)
		}
	}
	// requireRetried retries es with their event ids: the first retry lands
	// each once, the second finds them all as duplicates with the same seqs.
	requireRetried := func(t *testing.T, es []eventlog.Entry) {
		t.Helper()
		first, err := log.AppendBatch(ctx, es)
		require.NoError(t, err)
		second, err := log.AppendBatch(ctx, es)
		require.NoError(t, err)
		for i, e := range es {
			require.False(t, first[i].Duplicate, e.EventID)
			require.True(t, second[i].Duplicate, e.EventID)
			require.Equal(t, first[i].Event.Seq, second[i].Event.Seq, e.EventID)
			require.Equal(t, 1, countID(e.EventID), e.EventID)
		}
	}

	t.Run("Append", func(t *testing.T) {
		es := entries("append", 1)
		hook.arm()
		_, err := log.Append(ctx, es[0])
		require.NoError(t, hook.err)
		require.NotZero(t, hook.pid)
		requireLost(t, err, es)
		requireRetried(t, es)
	})

	t.Run("AppendBatch", func(t *testing.T) {
		// More than one entry: the COPY path.
		es := entries("batch", 25)
		hook.arm()
		_, err := log.AppendBatch(ctx, es)
		require.NoError(t, hook.err)
		require.NotZero(t, hook.pid)
		requireLost(t, err, es)
		requireRetried(t, es)
	})

	t.Run("AppendTx", func(t *testing.T) {
		// The caller's transaction loses its connection before the append
		// (the append fails) and after it (the commit fails).
		for _, when := range []string{"before", "after"} {
			es := entries("tx-"+when, 3)
			tx, err := db.BeginTxx(ctx, nil)
			require.NoError(t, err)
			var pid int
			require.NoError(t, tx.GetContext(ctx, &pid, `SELECT pg_backend_pid()`))
			if when == "before" {
				require.NoError(t, terminate(ctx, admin, pid))
				_, err = log.AppendTx(ctx, tx, es...)
				_ = tx.Rollback()
			} else {
				_, err = log.AppendTx(ctx, tx, es...)
				require.NoError(t, err)
				require.NoError(t, terminate(ctx, admin, pid))
				err = tx.Commit()
			}
			requireLost(t, err, es)
			requireRetried(t, es)
		}
	})

	t.Run("AmbiguousCommit", func(t *testing.T) {
		// The commit went through but its answer was lost: the caller
		// cannot tell, so it retries with the same event ids and gets the
		// stored events back as duplicates.
		es := entries("ambiguous", 4)
		_, err := log.AppendBatch(ctx, es) // result treated as unknown
		require.NoError(t, err)
		var stored []int64
		require.NoError(t, db.SelectContext(ctx, &stored,
			`SELECT seq FROM event_log WHERE event_id LIKE 'ambiguous-%' ORDER BY seq`))
		require.Len(t, stored, len(es))
		single, err := log.Append(ctx, es[0])
		require.NoError(t, err)
		require.True(t, single.Duplicate)
		require.Equal(t, stored[0], single.Event.Seq)
		again, err := log.AppendBatch(ctx, es)
		require.NoError(t, err)
		for i := range es {
			require.True(t, again[i].Duplicate)
			require.Equal(t, stored[i], again[i].Event.Seq)
			require.Equal(t, 1, countID(es[i].EventID))
		}
	})

	// The pool dropped the dead connections and serves new appends.
	_, err := log.Append(ctx, entry("h", `{"after":true}`))
	require.NoError(t, err)
}
