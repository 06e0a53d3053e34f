package eventlog

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Sentinel errors. Test for them with errors.Is; the errors canonlog returns
// wrap them with the details (which entry, which field, which seq).
var (
	// ErrInvalidKind is returned by Append, AppendBatch and AppendTx when an
	// entry's Kind does not match ^[a-z][a-z0-9_]{0,63}$, and by Query for a
	// malformed kind filter.
	ErrInvalidKind = errors.New("invalid kind")

	// ErrInvalidPayload is returned by the append methods when a payload is
	// not valid JSON, not valid UTF-8, or nested more than 1000 levels deep
	// (SQLite's json_valid refuses deeper documents). Nothing is written.
	ErrInvalidPayload = errors.New("invalid payload")

	// ErrPayloadNUL is returned by the append methods when a payload holds a
	// NUL character, raw or as the \u0000 escape: PostgreSQL text cannot
	// store it and jsonb refuses it. Nothing is written.
	ErrPayloadNUL = errors.New("payload contains a NUL character")

	// ErrPayloadTooLarge is returned by the append methods when a payload is
	// larger than Config.MaxPayloadBytes. Nothing is written.
	ErrPayloadTooLarge = errors.New("payload too large")

	// ErrInvalidEntry is returned by the append methods for an entry whose
	// other fields are malformed: a timestamp outside years 1–9999, or a
	// host, rollout or event id that is not valid UTF-8, holds a NUL or is
	// longer than 512 bytes.
	ErrInvalidEntry = errors.New("invalid entry")

	// ErrEventIDConflict is returned by the append methods when an entry
	// reuses the event id of a stored event with different content. The
	// returned error is a *ConflictError.
	ErrEventIDConflict = errors.New("event id already used by a different event")

	// ErrNotFound is returned by Get when no event has the seq.
	ErrNotFound = errors.New("event not found")

	// ErrInvalidFilter is returned by Query, Count, TailStart, Events, Pages
	// and NewFollower (and their Tx twins) for a malformed filter or
	// option: a negative seq, a limit out of range (or set where none
	// applies), a negative TailStart count, an empty time range, an id or
	// kind no entry can hold, a time outside years 0001-9999. A refused
	// Filter field comes as a *FilterError. Nothing reaches the database. NewFollower and the start
	// positions (PositionAfterSeq, PositionAtHead, PositionAtHeadTx) return
	// it too for a malformed Position, or a transaction that cannot hold a
	// start position.
	ErrInvalidFilter = errors.New("invalid filter")

	// ErrConditionFailed is returned by a conditional append (Log.If) when
	// an event matching its condition was appended after the condition's
	// seq. Nothing is written. The returned error is a *ConditionError.
	ErrConditionFailed = errors.New("append condition failed")

	// ErrInvalidCondition is returned by a conditional append and by
	// ReadForCondition for a malformed Condition (Condition.Validate).
	// Nothing reaches the database.
	ErrInvalidCondition = errors.New("invalid append condition")
)

// EntryError reports which entry of an append was refused and why. It
// unwraps to one of the sentinels above.
type EntryError struct {
	Index int    // position of the entry in the batch (0 for Append)
	Field string // "kind", "payload", "ts", "host_id", "rollout_id" or "event_id"
	Err   error  // the sentinel, wrapped with the reason
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("eventlog: entry %d: %s: %v", e.Index, e.Field, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// FilterError reports which field of a Filter was refused and why
// (Filter.Validate). It unwraps to ErrInvalidFilter and to Err, which
// wraps ErrInvalidKind for a malformed kind.
type FilterError struct {
	Field string // "AfterSeq", "HostID", "RolloutID", "Kinds", "Since" or "Until"
	Err   error  // the reason
}

func (e *FilterError) Error() string {
	return fmt.Sprintf("eventlog: %v: %s: %v", ErrInvalidFilter, e.Field, e.Err)
}

func (e *FilterError) Unwrap() []error { return []error{ErrInvalidFilter, e.Err} }

// ConflictError reports an event id that is already stored with different
// content, or that an earlier entry of the same call carries with
// different content. It unwraps to ErrEventIDConflict.
type ConflictError struct {
	Index   int    // position of the refused entry in the batch
	EventID string // the reused event id
	// Seq is the seq of the stored event that owns EventID, or 0 when the
	// owner is an earlier entry of the same call (OtherIndex). That entry
	// is not stored either, since the call fails as a whole, so no seq
	// names it.
	Seq        int64
	OtherIndex int    // when Seq is 0: position of the earlier entry in the batch
	Field      string // first field that differs
}

func (e *ConflictError) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("eventlog: entry %d: event id %q is already used by entry %d of the same append with a different %s",
			e.Index, e.EventID, e.OtherIndex, e.Field)
	}
	return fmt.Sprintf("eventlog: entry %d: event id %q is already used by event %d with a different %s",
		e.Index, e.EventID, e.Seq, e.Field)
}

func (e *ConflictError) Unwrap() error { return ErrEventIDConflict }

// Retryable reports whether err is a transient failure that the same
// append may get past when tried again:
//
//   - a PostgreSQL serialization failure or deadlock (40001, 40P01);
//   - a lost or refused PostgreSQL connection: database/sql's
//     driver.ErrBadConn (lib/pq reports a connection that broke or that the
//     server closed with a FATAL error this way), an unexpected EOF, a
//     network error (connection refused or reset, i/o timeout), SQLSTATE
//     class 08 (connection exception), 57P01 admin_shutdown, 57P02
//     crash_shutdown, 57P03 cannot_connect_now (the server is starting up
//     or shutting down);
//   - PostgreSQL refusing a new connection with 53300 too_many_connections:
//     the server's max_connections, or a role's or database's CONNECTION
//     LIMIT, is reached for now, and frees up as other clients' sessions
//     end (a pool that waits for its own connections instead needs no
//     retry: see app.Config.MaxOpenConns);
//   - SQLite reporting the database busy or locked for longer than the busy
//     timeout.
//
// 53400 configuration_limit_exceeded is not retryable: PostgreSQL raises
// it when a setting's ceiling is reached (max_wal_senders, replication
// slots, background workers), which waiting does not lift; it needs an
// operator to change the configuration, and retrying would only hide it.
//
// Validation errors, event id conflicts, constraint violations, a hook's
// own errors (unless they wrap one of the above) and the caller's context
// being cancelled or past its deadline are not retryable.
//
// The retry rule: an append that failed with a retryable error may or may
// not have committed (a connection lost during COMMIT leaves it unknown), so
// retrying is safe only for entries with an event id. After an error, retry
// the same entries with the same event ids until the append succeeds or
// fails with an error that is not retryable: each entry then lands exactly
// once, and a retry of one that did land returns it with Duplicate=true and
// its stored seq. An entry without an event id may land twice when retried
// after such an error.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	// The caller gave up: its context.DeadlineExceeded even satisfies
	// net.Error, so this test comes first. A refused entry stays refused,
	// whatever error its reason wraps.
	var entryErr *EntryError
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &entryErr) || errors.Is(err, ErrEventIDConflict) ||
		errors.Is(err, ErrConditionFailed) || errors.Is(err, ErrInvalidCondition) {
		return false
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code {
		case "40001", "40P01", // serialization_failure, deadlock_detected
			"57P01", "57P02", "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
			"53300": // too_many_connections
			return true
		}
		return pqErr.Code.Class() == "08" // connection_exception
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		switch sqliteErr.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// ErrForeignTxIDs is returned by CheckTxIDs when a position, or the log,
// holds PostgreSQL transaction ids that this server has not handed out
// yet: the database was copied into another cluster (pg_dump and
// pg_restore, a logical replica promoted), whose transaction ids started
// over. A follower orders events by transaction id and delivers only
// those of finished transactions, so from such a position it would skip
// every new event, and such events would wait until the server's ids
// pass theirs. See docs/consumers.md, "Restored into another cluster".
var ErrForeignTxIDs = errors.New("transaction ids from another PostgreSQL cluster")
