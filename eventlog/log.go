package eventlog

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// DefaultMaxPayloadBytes is the default payload size limit: 1 MiB.
const DefaultMaxPayloadBytes = 1 << 20

// Hook is called inside every append's transaction, after the entries are
// inserted and before the commit. projection.Registry implements it to keep
// projections in step with the log; an error rolls the whole append back.
type Hook interface {
	// AfterAppend receives the newly stored events of one append, in seq
	// order. Duplicates (entries whose event id was already stored) are not
	// passed: they were applied when they first landed. events is never
	// empty.
	AfterAppend(ctx context.Context, tx *sqlx.Tx, events []Event) error
}

// LockingHook is an optional extension of Hook. On PostgreSQL, before the
// hook runs, the log takes a shared transaction-level advisory lock on each
// name SharedLocks returns for the kinds being appended (the key is
// internal/pglock's hash of the current schema and the name), inside the
// very statement that inserts the events: it costs no extra round trip. A
// holder of the same lock in exclusive mode (a projection rebuild) thereby
// excludes appends of those kinds. SQLite ignores it: it has one writer.
type LockingHook interface {
	Hook
	// SharedLocks returns the lock names for an append of entries of kinds
	// (distinct, in entry order); nil or empty for none.
	SharedLocks(kinds []Kind) []string
}

// SelectiveHook is an optional extension of Hook for a hook that acts
// only on some kinds: an append none of whose entries it consumes does
// not call it. On PostgreSQL a single such append, taking no shared lock
// (LockingHook) and with SerializeAppends off, then needs no transaction
// of database/sql's: with an event id it is one autocommitted INSERT, one
// round trip instead of three (BEGIN, INSERT, COMMIT); without one, two
// round trips ("BEGIN; SELECT locks; INSERT", then COMMIT), so that no
// retry can store it twice. projection.Registry and the
// projection.Manager's hook implement it.
type SelectiveHook interface {
	Hook
	// Consumes reports whether AfterAppend acts on events of kind. It
	// must be true for every kind AfterAppend acts on: events of a kind
	// it is false for may be appended without calling the hook.
	Consumes(kind Kind) bool
}

// Config configures a Log. A nil *Config means all defaults.
type Config struct {
	// Clock stamps entries appended with a zero TS. Defaults to SystemClock.
	Clock Clock

	// MaxPayloadBytes is the largest payload accepted, in bytes. Defaults to
	// DefaultMaxPayloadBytes (1 MiB). Must not be negative.
	MaxPayloadBytes int

	// Hook runs inside each append's transaction. Defaults to none.
	Hook Hook

	// SerializeAppends makes appends take one log-wide lock for the rest of
	// their transaction, so transactions commit in seq order. Only
	// projections that need strict commit order want this: it caps appends
	// at one transaction at a time (see docs/performance.md for its cost).
	// SQLite always serializes writers, so there it changes nothing.
	// Defaults to false.
	SerializeAppends bool

	// Notify (PostgreSQL) makes the log tell other processes of the
	// appends it commits, with NOTIFY on NotifyChannel after the commit:
	// their consumers then read new events within milliseconds instead
	// of at their next poll. The notifications are sent from a goroutine
	// of the log's, at most one per NotifyInterval, never inside an
	// append's transaction, so appends do not queue on the server's
	// notification lock (docs/consumers.md, "Wake-ups"). Close stops it.
	// Defaults to false.
	Notify bool

	// MeterProvider records the log's metrics: append durations and
	// outcomes, events appended, batch sizes, the log's head and, on
	// PostgreSQL, the age of the oldest transaction holding followers
	// back (docs/observability.md). Nil records nothing and costs the
	// append path nothing.
	MeterProvider metric.MeterProvider

	// TracerProvider traces the log's appends: a span per Append,
	// AppendBatch or AppendTx call, child of the span in the caller's
	// context, with OpenTelemetry's database attributes
	// (docs/observability.md). Nil traces nothing.
	TracerProvider trace.TracerProvider

	// ListenURL (PostgreSQL) is the database URL of a connection on which
	// the log listens for other processes' notifications (Notify) while
	// anything waits for wake-ups (Wakeups: consumers do). Empty: only
	// this log's own appends wake its followers, and the rest is found by
	// polling.
	ListenURL string
}

// Log is the append-only event log on one database. It is safe for
// concurrent use.
type Log struct {
	db         *sqlx.DB
	backend    Backend
	clock      Clock
	maxPayload int
	hook       Hook
	serialize  bool
	// dimensionLocks: appends take the locks conditions rely on (always,
	// but for a benchmark measuring their cost).
	dimensionLocks bool
	// conditionalOneOff: the server refused the one-statement conditional
	// append (its default isolation is not READ COMMITTED).
	conditionalOneOff atomic.Bool
	q                 queries
	tel               *telemetry // nil: no providers configured
	meters            metric.MeterProvider
	tracers           trace.TracerProvider
	wake              *wakeups

	stmtMu sync.Mutex
	stmts  map[string]*sqlx.Stmt
}

// New returns a Log on db, which must hold canonlog's schema (see package
// migrations). It does not touch the database; db stays the caller's to
// close.
func New(db *sqlx.DB, cfg *Config) (*Log, error) {
	b, err := BackendOf(db)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = &Config{}
	}
	l := &Log{
		db:             db,
		backend:        b,
		clock:          cfg.Clock,
		maxPayload:     cfg.MaxPayloadBytes,
		hook:           cfg.Hook,
		serialize:      cfg.SerializeAppends,
		q:              queriesFor(db, b, true),
		dimensionLocks: b == Postgres,
		stmts:          make(map[string]*sqlx.Stmt),
	}
	if l.clock == nil {
		l.clock = SystemClock{}
	}
	if l.wake, err = newWakeups(l, cfg); err != nil {
		return nil, err
	}
	l.meters, l.tracers = providers(cfg)
	if l.tel, err = newTelemetry(l); err != nil {
		return nil, fmt.Errorf("eventlog: telemetry: %w", err)
	}
	switch {
	case l.maxPayload < 0:
		return nil, fmt.Errorf("eventlog: Config.MaxPayloadBytes is %d: use a positive limit, or 0 for the default of %d", l.maxPayload, DefaultMaxPayloadBytes)
	case l.maxPayload == 0:
		l.maxPayload = DefaultMaxPayloadBytes
	}
	return l, nil
}

// DB returns the database the log writes to.
func (l *Log) DB() *sqlx.DB { return l.db }

// Clock returns the clock that stamps entries appended with a zero TS.
func (l *Log) Clock() Clock { return l.clock }

// MeterProvider returns Config.MeterProvider, nil when none was set or
// it is the API's no-op provider: the consumers, rebuilds and verifies of
// the log record their metrics through it too.
func (l *Log) MeterProvider() metric.MeterProvider { return l.meters }

// TracerProvider returns Config.TracerProvider, nil when none was set or
// it is the API's no-op provider.
func (l *Log) TracerProvider() trace.TracerProvider { return l.tracers }

// MaxPayloadBytes returns the payload size limit in force.
func (l *Log) MaxPayloadBytes() int { return l.maxPayload }

// Close releases the log's prepared statements and stops its notifier and
// listener (Config.Notify, Config.ListenURL). It does not close the
// database.
func (l *Log) Close() error {
	l.wake.close()
	l.stmtMu.Lock()
	stmts := l.stmts
	l.stmts = map[string]*sqlx.Stmt{}
	l.stmtMu.Unlock()
	// Closed outside the lock: see stmt.
	var first error
	for _, s := range stmts {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// stmt returns query prepared on the log's database, preparing it on first
// use. Prepared statements save PostgreSQL a parse round trip per call.
//
// The lock guards the map only and is never held across a call into
// database/sql: preparing waits for a free connection of the pool, and
// closing a statement waits for every connection it was prepared on to be
// idle, while the appends holding those connections inside their
// transactions look their statements up under the lock (txStmt) before
// they can commit and give a connection back. Two callers may then prepare
// the same query at once; the second's statement is closed.
func (l *Log) stmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	l.stmtMu.Lock()
	s, ok := l.stmts[query]
	l.stmtMu.Unlock()
	if ok {
		return s, nil
	}
	s, err := l.db.PreparexContext(ctx, query)
	if err != nil {
		return nil, err
	}
	l.stmtMu.Lock()
	first, ok := l.stmts[query]
	if !ok {
		l.stmts[query] = s
	}
	l.stmtMu.Unlock()
	if ok {
		_ = s.Close()
		return first, nil
	}
	return s, nil
}
