package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// Status is what the database knows of a consumer.
type Status struct {
	Name     string
	Position eventlog.Position
	// HandledSeq is the seq of the last event handled (0 before the
	// first).
	HandledSeq int64
	// Generation counts the takeovers (and resets) of the consumer.
	Generation int64
	// Kinds and Version are what it last ran with.
	Kinds   []eventlog.Kind
	Version int
	// FailedSeq and Failure are set when it stopped on an event its
	// handler kept failing on (FailStop), until it handles it.
	FailedSeq int64
	Failure   string
	UpdatedAt time.Time
	// ChangedAt is when an instance last took it over with other kinds or
	// another handler version than the instance before (zero: never), and
	// ChangedFrom what it ran with until then ("kinds=…; version=…"). A
	// consumer resumes from its position after such a change: when the
	// new handler needs the events before it too, Reset it.
	ChangedAt   time.Time
	ChangedFrom string
	// Parked counts the events it parked (FailPark).
	Parked int
	// LagEvents counts the events of its kinds with a seq above
	// HandledSeq: an estimate on PostgreSQL, where events commit out of
	// seq order. LagSeconds is the age of the oldest of them (0 when
	// there is none).
	LagEvents  int64
	LagSeconds float64
}

// ReadStatus returns the status of every consumer with a position, in
// name order.
func ReadStatus(ctx context.Context, log *eventlog.Log) ([]Status, error) {
	db := log.DB()
	rows, err := db.QueryxContext(ctx, `SELECT c.name, c.position, c.handled_seq, c.generation, c.kinds, c.version,
  COALESCE(c.failed_seq, 0), COALESCE(c.failure, ''), c.updated_at, c.changed_at, COALESCE(c.changed_from, ''),
  (SELECT COUNT(*) FROM canonlog_consumer_parked p WHERE p.consumer = c.name)
FROM canonlog_consumers c ORDER BY c.name`)
	if err != nil {
		return nil, fmt.Errorf("consumer: status: %w", err)
	}
	defer rows.Close()
	var out []Status
	for rows.Next() {
		var (
			s           Status
			pos, kinds  string
			updatedAt   time.Time
			parkedCount int
		)
		if err := rows.Scan(&s.Name, &pos, &s.HandledSeq, &s.Generation, &kinds, &s.Version, &s.FailedSeq, &s.Failure,
			eventlog.ScanTime(&updatedAt), nullTime{&s.ChangedAt}, &s.ChangedFrom, &parkedCount); err != nil {
			return nil, fmt.Errorf("consumer: status: %w", err)
		}
		if err := json.Unmarshal([]byte(pos), &s.Position); err != nil {
			return nil, fmt.Errorf("consumer: status of %s: stored position %q: %w", s.Name, pos, err)
		}
		if kinds != "" {
			for _, k := range strings.Split(kinds, ",") {
				s.Kinds = append(s.Kinds, eventlog.Kind(k))
			}
		}
		s.UpdatedAt, s.Parked = updatedAt, parkedCount
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("consumer: status: %w", err)
	}
	rows.Close()
	for i := range out {
		s := &out[i]
		f := eventlog.Filter{Kinds: s.Kinds, AfterSeq: s.HandledSeq}
		if s.LagEvents, err = log.Count(ctx, f); err != nil {
			return nil, fmt.Errorf("consumer: lag of %s: %w", s.Name, err)
		}
		if s.LagEvents > 0 {
			age, err := log.LagAge(ctx, f)
			if err != nil {
				return nil, fmt.Errorf("consumer: lag of %s: %w", s.Name, err)
			}
			s.LagSeconds = age.Seconds()
		}
	}
	return out, nil
}

// ErrUnknownConsumer is returned by Reset for a name without a position.
var ErrUnknownConsumer = errors.New("unknown consumer")

// Reset moves a consumer's position to just after seq (0: the beginning
// of the log): its next run handles the events committed after seq in
// the log's order, and the events at or below it that were still being
// appended when Reset ran (eventlog.Log.PositionAfterSeq). It bumps the
// consumer's generation, so a running instance is deposed at its next
// save and stops with ErrDeposed, and clears a recorded failure.
func Reset(ctx context.Context, log *eventlog.Log, name string, seq int64) error {
	if seq < 0 {
		return fmt.Errorf("consumer %s: reset to seq %d: %w: use 0 or more", name, seq, ErrInvalidConfig)
	}
	var pos eventlog.Position
	if seq > 0 {
		var err error
		if pos, err = log.PositionAfterSeq(ctx, seq); err != nil {
			return fmt.Errorf("consumer %s: reset: %w", name, err)
		}
	}
	b, err := json.Marshal(pos)
	if err != nil {
		return err
	}
	db := log.DB()
	res, err := db.ExecContext(ctx, db.Rebind(`UPDATE canonlog_consumers SET position = ?, handled_seq = ?, generation = generation + 1,
  failed_seq = NULL, failure = NULL, updated_at = ? WHERE name = ?`), string(b), seq, eventlog.FormatTime(time.Now()), name)
	if err != nil {
		return fmt.Errorf("consumer %s: reset: %w", name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("consumer %s: reset: %w", name, err)
	} else if n == 0 {
		return fmt.Errorf("consumer %s: reset: %w", name, ErrUnknownConsumer)
	}
	return nil
}

// nullTime scans a nullable timestamp column: NULL is the zero time.
type nullTime struct{ t *time.Time }

func (n nullTime) Scan(src any) error {
	if src == nil {
		*n.t = time.Time{}
		return nil
	}
	return eventlog.ScanTime(n.t).Scan(src)
}

// RepositionTx sets consumer name's position, in tx, to pos, after the
// event handledSeq, with the kinds and handler version given, creating
// its row when it has none; it bumps the generation, so a running
// instance is deposed at its next save, and clears a recorded failure.
// It is for code that rebuilds, in tx, what the consumer maintains (an
// asynchronous projection): the rebuilt state and the position commit
// together.
func RepositionTx(ctx context.Context, tx *sqlx.Tx, name string, kinds []eventlog.Kind, version int, pos eventlog.Position, handledSeq int64) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("consumer %q: reposition: %w: Name must be lowercase letters, digits and underscores, starting with a letter, at most 63 bytes", name, ErrInvalidConfig)
	}
	b, err := json.Marshal(pos)
	if err != nil {
		return err
	}
	ks := make([]string, len(kinds))
	for i, k := range kinds {
		ks[i] = string(k)
	}
	_, err = tx.ExecContext(ctx, tx.Rebind(`INSERT INTO canonlog_consumers (name, position, handled_seq, kinds, version, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET position = excluded.position, handled_seq = excluded.handled_seq,
  generation = canonlog_consumers.generation + 1, kinds = excluded.kinds, version = excluded.version,
  failed_seq = NULL, failure = NULL, updated_at = excluded.updated_at`),
		name, string(b), handledSeq, strings.Join(ks, ","), max(version, 1), eventlog.FormatTime(time.Now()))
	if err != nil {
		return fmt.Errorf("consumer %s: reposition: %w", name, err)
	}
	return nil
}

// PositionTx reads consumer name's stored position in tx; found is false
// when it has none.
func PositionTx(ctx context.Context, tx *sqlx.Tx, name string) (pos eventlog.Position, found bool, err error) {
	var stored string
	err = tx.QueryRowxContext(ctx, tx.Rebind(`SELECT position FROM canonlog_consumers WHERE name = ?`), name).Scan(&stored)
	if errors.Is(err, sql.ErrNoRows) {
		return pos, false, nil
	}
	if err != nil {
		return pos, false, fmt.Errorf("consumer %s: read its position: %w", name, err)
	}
	if err := json.Unmarshal([]byte(stored), &pos); err != nil {
		return pos, false, fmt.Errorf("consumer %s: stored position %q: %w", name, stored, err)
	}
	return pos, true, nil
}
