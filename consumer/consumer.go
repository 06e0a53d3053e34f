package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
	"github.com/canonlog/canonlog/internal/pglock"
)

// HandlerFunc handles one event outside the database (Config.Handle). It
// may see an event again after a failure, a crash or a takeover: use the
// event's seq, or its event id, as an idempotency key.
type HandlerFunc func(ctx context.Context, ev eventlog.Event) error

// BatchHandlerFunc handles a page of events outside the database
// (Config.HandleBatch), in commit order: it returns nil only once every
// event of the page has had its effect, so a handler may pipeline the page
// (publish every event, then wait for every acknowledgement). Like
// HandlerFunc it may see events again.
type BatchHandlerFunc func(ctx context.Context, events []eventlog.Event) error

// TxHandlerFunc writes what it derives from events, in commit order, in tx
// (Config.HandleTx); tx commits with the consumer's new position, or
// neither commits. It must not call the outside world: a rolled-back
// transaction cannot take a call back.
type TxHandlerFunc func(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error

// FailurePolicy says what a consumer does with an event its handler keeps
// failing on.
type FailurePolicy int

const (
	// FailStop stops the consumer before the event: Run returns a
	// *HandlerError, and Status shows the failure.
	FailStop FailurePolicy = iota
	// FailPark records the event in canonlog_consumer_parked and goes on
	// with the next.
	FailPark
)

// Defaults of Config.
const (
	DefaultAttempts   = 5
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultPageSize   = 500
)

// Config configures a Consumer.
type Config struct {
	// Name identifies the consumer and its position: lowercase letters,
	// digits and underscores, starting with a letter, at most 63 bytes.
	// Required.
	Name string
	// Kinds restricts the consumer to events of these kinds. Defaults to
	// every kind.
	Kinds []eventlog.Kind
	// Version is the handler's version, recorded with the position.
	// Defaults to 1.
	Version int

	// Exactly one of Handle or HandleBatch (external, at least once) and
	// HandleTx (transactional, exactly once in the database) is required.
	// HandleBatch gets each page whole; after it failed on a page, the
	// page's events are given to it one at a time, to tell the event that
	// fails from those that do not.
	Handle      HandlerFunc
	HandleBatch BatchHandlerFunc
	HandleTx    TxHandlerFunc

	// FromHead starts a consumer that has no position yet at the head of
	// the log (the events committed from then on) instead of at its
	// beginning. A consumer with a position resumes from it either way.
	FromHead bool
	// PageSize is the most events read, and given to HandleTx or
	// HandleBatch, at a time.
	// Defaults to DefaultPageSize; at most eventlog.MaxPageSize.
	PageSize int
	// PollInterval is the wait between polls once the consumer has
	// caught up. Defaults to eventlog.DefaultPollInterval.
	PollInterval time.Duration

	// Attempts is how many times the handler is tried on one event before
	// OnFailure applies. Defaults to DefaultAttempts.
	Attempts int
	// MinBackoff and MaxBackoff bound the wait before each new attempt:
	// MinBackoff, doubling, at most MaxBackoff. Default DefaultMinBackoff
	// and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// OnFailure is what happens once the attempts are spent. Defaults to
	// FailStop.
	OnFailure FailurePolicy

	// Logger receives a line for each failed attempt and each parked
	// event. Defaults to slog.Default().
	Logger *slog.Logger
}

// handlers counts the handlers cfg sets.
func handlers(cfg *Config) int {
	n := 0
	for _, set := range []bool{cfg.Handle != nil, cfg.HandleBatch != nil, cfg.HandleTx != nil} {
		if set {
			n++
		}
	}
	return n
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Consumer runs one consumer's handler. Make one with New; it is safe to
// call Run again after it returned.
type Consumer struct {
	log     *eventlog.Log
	db      *sqlx.DB
	backend eventlog.Backend
	cfg     Config
	filter  eventlog.Filter
	kinds   string     // as stored
	tel     *telemetry // nil: the log has no providers
	// handledSeq is the last seq the running instance handled, for its
	// metrics.
	handledSeq atomic.Int64
}

// New checks cfg and returns a consumer of log's events. It touches no
// table: Run does.
func New(log *eventlog.Log, cfg *Config) (*Consumer, error) {
	if log == nil || cfg == nil {
		return nil, fmt.Errorf("consumer: %w: a log and a *Config are required", ErrInvalidConfig)
	}
	c := *cfg
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("consumer %q: %w: "+format, append([]any{c.Name, ErrInvalidConfig}, args...)...)
	}
	switch {
	case !nameRE.MatchString(c.Name):
		return nil, invalid("Name must be lowercase letters, digits and underscores, starting with a letter, at most 63 bytes")
	case handlers(&c) != 1:
		return nil, invalid("give exactly one of Handle or HandleBatch (external, at least once) and HandleTx (transactional)")
	case c.Version < 0:
		return nil, invalid("Version is %d: use 1 or more, or 0 for 1", c.Version)
	case c.PageSize < 0 || c.PageSize > eventlog.MaxPageSize:
		return nil, invalid("PageSize is %d: between 0 (default %d) and %d", c.PageSize, DefaultPageSize, eventlog.MaxPageSize)
	case c.PollInterval < 0:
		return nil, invalid("PollInterval is %s: use 0 for the default or a positive duration", c.PollInterval)
	case c.Attempts < 0:
		return nil, invalid("Attempts is %d: use 1 or more, or 0 for %d", c.Attempts, DefaultAttempts)
	case c.MinBackoff < 0 || c.MaxBackoff < 0:
		return nil, invalid("MinBackoff and MaxBackoff must not be negative")
	case c.OnFailure != FailStop && c.OnFailure != FailPark:
		return nil, invalid("OnFailure is %d: use FailStop or FailPark", c.OnFailure)
	}
	if c.Version == 0 {
		c.Version = 1
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = eventlog.DefaultPollInterval
	}
	if c.Attempts == 0 {
		c.Attempts = DefaultAttempts
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.MinBackoff > c.MaxBackoff {
		return nil, invalid("MinBackoff %s is more than MaxBackoff %s", c.MinBackoff, c.MaxBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	backend, err := eventlog.BackendOf(log.DB())
	if err != nil {
		return nil, fmt.Errorf("consumer %q: %w", c.Name, err)
	}
	con := &Consumer{log: log, db: log.DB(), backend: backend, cfg: c, filter: eventlog.Filter{Kinds: c.Kinds}}
	// The follower checks the kinds.
	if _, err := log.NewFollower(eventlog.Position{}, con.followOptions(false)); err != nil {
		return nil, invalid("%v", err)
	}
	kinds := make([]string, len(c.Kinds))
	for i, k := range c.Kinds {
		kinds[i] = string(k)
	}
	con.kinds = strings.Join(kinds, ",")
	if con.tel, err = newTelemetry(log, c.Name); err != nil {
		return nil, fmt.Errorf("consumer %q: telemetry: %w", c.Name, err)
	}
	return con, nil
}

// Name returns the consumer's name.
func (c *Consumer) Name() string { return c.cfg.Name }

// Kinds returns the kinds the consumer handles; nil for every kind.
func (c *Consumer) Kinds() []eventlog.Kind { return slices.Clone(c.cfg.Kinds) }

func (c *Consumer) followOptions(one bool) *eventlog.FollowOptions {
	size := c.cfg.PageSize
	if one {
		size = 1
	}
	return &eventlog.FollowOptions{Filter: c.filter, PageSize: size, PollInterval: c.cfg.PollInterval}
}

// lockName names the consumer's advisory lock (PostgreSQL).
func lockName(name string) string { return "canonlog:consumer:" + name }

// lockCheckEvery is how often a running instance checks that the session
// holding its lock is alive.
const lockCheckEvery = time.Second

// Run takes the consumer over and handles events until ctx ends (it then
// returns nil, once the handler in flight has returned), another instance
// deposes it (ErrDeposed), the handler fails on an event under FailStop
// (*HandlerError), or the database fails in a way that retrying does not
// mend. On PostgreSQL it first waits, for as long as ctx allows, for any
// other instance of the consumer to stop.
func (c *Consumer) Run(ctx context.Context) error {
	// Subscribed first: an event committed after it is announced to the
	// loop, whenever the loop gets to read it.
	wake, unsubscribe := c.log.Wakeups(c.cfg.Kinds...)
	defer unsubscribe()
	var lock *sql.Conn
	if c.backend == eventlog.Postgres {
		var err error
		if lock, err = c.lock(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer c.unlock(lock)
	}
	r, err := c.takeOver(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	r.lock = lock
	r.wake = wake
	c.handledSeq.Store(r.handled)
	stopObserving, err := c.tel.observe(c)
	if err != nil {
		return fmt.Errorf("consumer %s: telemetry: %w", c.cfg.Name, err)
	}
	defer stopObserving()
	err = r.loop(ctx)
	if ctx.Err() != nil && !errors.Is(err, ErrDeposed) {
		var he *HandlerError
		if !errors.As(err, &he) {
			return nil
		}
	}
	return err
}

// lock takes the consumer's session advisory lock on a connection of its
// own, waiting for the instance that holds it.
func (c *Consumer) lock(ctx context.Context) (*sql.Conn, error) {
	conn, err := c.db.DB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", c.cfg.Name, err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+pglock.KeyExpr("$1::text")+`)`, lockName(c.cfg.Name)); err != nil {
		dbutil.Discard(conn)
		return nil, fmt.Errorf("consumer %s: take its lock: %w", c.cfg.Name, err)
	}
	return conn, nil
}

// unlock releases the lock; a connection that cannot say it did is
// closed, which releases it too.
func (c *Consumer) unlock(conn *sql.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock(`+pglock.KeyExpr("$1::text")+`)`, lockName(c.cfg.Name)); err != nil {
		dbutil.Discard(conn)
		return
	}
	_ = conn.Close()
}

// takeOver makes the consumer's row if it has none, bumps its generation
// and returns a runner from its position.
func (c *Consumer) takeOver(ctx context.Context) (*runner, error) {
	var start eventlog.Position
	if c.cfg.FromHead {
		var err error
		if start, err = c.log.PositionAtHead(ctx); err != nil {
			return nil, fmt.Errorf("consumer %s: %w", c.cfg.Name, err)
		}
	}
	initial, err := json.Marshal(start)
	if err != nil {
		return nil, err
	}
	r := &runner{c: c, done: map[int64]bool{}}
	err = dbutil.WithTx(ctx, c.db, nil, func(tx *sqlx.Tx) error {
		now := eventlog.FormatTime(time.Now())
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO canonlog_consumers (name, position, kinds, version, updated_at)
VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`), c.cfg.Name, string(initial), c.kinds, c.cfg.Version, now); err != nil {
			return err
		}
		var prevKinds string
		var prevVersion int
		if err := tx.QueryRowxContext(ctx, tx.Rebind(`SELECT kinds, version FROM canonlog_consumers WHERE name = ?`), c.cfg.Name).Scan(&prevKinds, &prevVersion); err != nil {
			return err
		}
		if prevKinds != c.kinds || prevVersion != c.cfg.Version {
			c.cfg.Logger.Warn("consumer: kinds or handler version changed since it last ran; it resumes from its position",
				"consumer", c.cfg.Name, "kinds_before", prevKinds, "kinds", c.kinds, "version_before", prevVersion, "version", c.cfg.Version)
			if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE canonlog_consumers SET changed_at = ?, changed_from = ? WHERE name = ?`),
				now, fmt.Sprintf("kinds=%s; version=%d", kindsText(prevKinds), prevVersion), c.cfg.Name); err != nil {
				return err
			}
		}
		return tx.QueryRowxContext(ctx, tx.Rebind(`UPDATE canonlog_consumers SET generation = generation + 1, kinds = ?, version = ?, updated_at = ?
WHERE name = ? RETURNING generation, position, handled_seq`), c.kinds, c.cfg.Version, now, c.cfg.Name).Scan(&r.gen, &r.stored, &r.handled)
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: take over: %w", c.cfg.Name, err)
	}
	var pos eventlog.Position
	if err := json.Unmarshal([]byte(r.stored), &pos); err != nil {
		return nil, fmt.Errorf("consumer %s: stored position %q: %w", c.cfg.Name, r.stored, err)
	}
	if err := c.log.CheckTxIDs(ctx, eventlog.Position{}); err != nil {
		return nil, fmt.Errorf("consumer %s: %w", c.cfg.Name, err)
	}
	if err := c.log.CheckTxIDs(ctx, pos); err != nil {
		return nil, fmt.Errorf("consumer %s: %w (canonlog consumers reset --name %s --to-seq %d repositions it after the last event it handled)",
			c.cfg.Name, err, c.cfg.Name, r.handled)
	}
	if err := r.restart(false); err != nil {
		return nil, err
	}
	return r, nil
}

// kindsText renders kinds as stored for people: "*" for every kind.
func kindsText(kinds string) string {
	if kinds == "" {
		return "*"
	}
	return kinds
}
