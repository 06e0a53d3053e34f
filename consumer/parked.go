package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
)

// Parked is an event a consumer parked.
type Parked struct {
	Seq      int64
	Attempts int
	Failure  string
	ParkedAt time.Time
	// RetryRequestedAt is when RetryParked asked for the event to be
	// tried again (zero: not asked, or tried and failed since).
	RetryRequestedAt time.Time
}

// ListParked returns the events consumer name parked, in seq order.
func ListParked(ctx context.Context, log *eventlog.Log, name string) ([]Parked, error) {
	db := log.DB()
	rows, err := db.QueryxContext(ctx, db.Rebind(`SELECT seq, attempts, failure, parked_at, retry_requested_at
FROM canonlog_consumer_parked WHERE consumer = ? ORDER BY seq`), name)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: parked: %w", name, err)
	}
	defer rows.Close()
	out := []Parked{}
	for rows.Next() {
		var p Parked
		if err := rows.Scan(&p.Seq, &p.Attempts, &p.Failure, eventlog.ScanTime(&p.ParkedAt), nullTime{&p.RetryRequestedAt}); err != nil {
			return nil, fmt.Errorf("consumer %s: parked: %w", name, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("consumer %s: parked: %w", name, err)
	}
	return out, nil
}

// ErrNotParked is returned by RetryParked and SkipParked for a seq the
// consumer has not parked.
var ErrNotParked = errors.New("event not parked")

// RetryParked asks the running instance of consumer name to try its
// parked events seqs again (every parked event when seqs is empty), in
// seq order, once each, when it next has nothing else to handle: an
// event its handler then succeeds on is no longer parked; one it fails
// on stays parked, with one attempt more and its new failure. It returns
// how many events it asked for. A seq the consumer has not parked fails
// the call with ErrNotParked, and nothing changes.
func RetryParked(ctx context.Context, log *eventlog.Log, name string, seqs ...int64) (int, error) {
	return changeParked(ctx, log, name, seqs, "retry", func(tx *sqlx.Tx, where string, args []any) (int64, error) {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE canonlog_consumer_parked SET retry_requested_at = ? WHERE `+where),
			append([]any{eventlog.FormatTime(time.Now())}, args...)...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	})
}

// SkipParked gives up on the parked events seqs of consumer name (every
// parked event when seqs is empty): they are no longer parked, and never
// handled. It returns how many it skipped. A seq the consumer has not
// parked fails the call with ErrNotParked, and nothing changes.
func SkipParked(ctx context.Context, log *eventlog.Log, name string, seqs ...int64) (int, error) {
	return changeParked(ctx, log, name, seqs, "skip", func(tx *sqlx.Tx, where string, args []any) (int64, error) {
		res, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM canonlog_consumer_parked WHERE `+where), args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	})
}

// changeParked runs change on the parked rows of name and seqs in one
// transaction, rolled back unless every seq was parked.
func changeParked(ctx context.Context, log *eventlog.Log, name string, seqs []int64, what string,
	change func(tx *sqlx.Tx, where string, args []any) (int64, error)) (int, error) {
	where, args := "consumer = ?", []any{name}
	if len(seqs) > 0 {
		seen := map[int64]bool{}
		marks := make([]string, 0, len(seqs))
		for _, seq := range seqs {
			if seq <= 0 {
				return 0, fmt.Errorf("consumer %s: %s parked event %d: %w: a seq is 1 or more", name, what, seq, ErrInvalidConfig)
			}
			if !seen[seq] {
				seen[seq] = true
				marks = append(marks, "?")
				args = append(args, seq)
			}
		}
		where += " AND seq IN (" + strings.Join(marks, ", ") + ")"
	}
	var n int64
	err := dbutil.WithTx(ctx, log.DB(), nil, func(tx *sqlx.Tx) error {
		var err error
		if n, err = change(tx, where, args); err != nil {
			return err
		}
		if want := int64(len(args) - 1); len(seqs) > 0 && n != want {
			return fmt.Errorf("%w: %d of the %d events given are not parked by consumer %s (consumers parked list shows those that are)",
				ErrNotParked, want-n, want, name)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %s parked events: %w", name, what, err)
	}
	return int(n), nil
}

// retryParkedBatch is the most parked events an instance tries again in
// one go.
const retryParkedBatch = 100

// retryParked tries again, once each, the parked events an operator asked
// to (RetryParked), at most once per PollInterval. It reports whether it
// tried any.
func (r *runner) retryParked(ctx context.Context) (bool, error) {
	if time.Since(r.lastParkedCheck) < r.c.cfg.PollInterval {
		return false, nil
	}
	r.lastParkedCheck = time.Now()
	db, name := r.c.db, r.c.cfg.Name
	var seqs []int64
	if err := db.SelectContext(ctx, &seqs, db.Rebind(`SELECT seq FROM canonlog_consumer_parked
WHERE consumer = ? AND retry_requested_at IS NOT NULL ORDER BY seq LIMIT `+fmt.Sprint(retryParkedBatch)), name); err != nil {
		return false, fmt.Errorf("consumer %s: read the parked events to retry: %w", name, err)
	}
	for _, seq := range seqs {
		if err := r.retryOne(ctx, seq); err != nil {
			return true, err
		}
	}
	return len(seqs) > 0, nil
}

// retryOne tries parked event seq again.
func (r *runner) retryOne(ctx context.Context, seq int64) error {
	cfg, db := r.c.cfg, r.c.db
	ev, err := r.c.log.Get(ctx, seq)
	if err != nil {
		return fmt.Errorf("consumer %s: retry parked event %d: %w", cfg.Name, seq, err)
	}
	// unpark deletes the row, in tx, fenced by the generation: a deposed
	// instance's retry rolls back (with a transactional handler's writes).
	unpark := func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE canonlog_consumers SET updated_at = ? WHERE name = ? AND generation = ?`),
			eventlog.FormatTime(time.Now()), cfg.Name, r.gen)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("consumer %s: %w", cfg.Name, ErrDeposed)
		}
		_, err = tx.ExecContext(ctx, tx.Rebind(`DELETE FROM canonlog_consumer_parked WHERE consumer = ? AND seq = ?`), cfg.Name, seq)
		return err
	}
	var herr error
	switch {
	case cfg.HandleTx != nil:
		err = dbutil.WithTx(ctx, db, nil, func(tx *sqlx.Tx) error {
			if herr = cfg.HandleTx(ctx, tx, []eventlog.Event{ev}); herr != nil {
				return herr
			}
			return unpark(tx)
		})
		if herr == nil && err != nil {
			return fmt.Errorf("consumer %s: retry parked event %d: %w", cfg.Name, seq, err)
		}
	case cfg.HandleBatch != nil:
		herr = cfg.HandleBatch(ctx, []eventlog.Event{ev})
	default:
		herr = cfg.Handle(ctx, ev)
	}
	if herr == nil && cfg.HandleTx == nil {
		if err := dbutil.WithTx(ctx, db, nil, unpark); err != nil {
			return fmt.Errorf("consumer %s: retry parked event %d: %w", cfg.Name, seq, err)
		}
	}
	if herr == nil {
		cfg.Logger.Info("consumer: parked event handled on retry", "consumer", cfg.Name, "seq", seq)
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	cfg.Logger.Warn("consumer: parked event failed again", "consumer", cfg.Name, "seq", seq, "error", herr)
	_, err = db.ExecContext(ctx, db.Rebind(`UPDATE canonlog_consumer_parked SET attempts = attempts + 1, failure = ?, retry_requested_at = NULL
WHERE consumer = ? AND seq = ?`), herr.Error(), cfg.Name, seq)
	if err != nil {
		return fmt.Errorf("consumer %s: record the failure of parked event %d: %w", cfg.Name, seq, err)
	}
	return nil
}
