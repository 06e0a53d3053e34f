package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
)

// runner is one instance's run of a consumer, from its takeover.
type runner struct {
	c    *Consumer
	lock *sql.Conn // PostgreSQL: the session holding the advisory lock

	gen     int64  // the generation this instance took the consumer over with
	stored  string // the position as stored: the fence
	handled int64  // handled_seq as stored

	f *eventlog.Follower
	// isolate is the number of events still to be handled one at a time:
	// after a page failed, its events are retried alone, to tell the
	// event that fails from those that do not. attempts counts the
	// failures of the event at the position.
	isolate  int
	attempts int
	// done holds the events Handle succeeded on since the stored
	// position: read again after a failure, they are not handled again.
	done map[int64]bool
	// parkSeq is the event Handle is to park when it reads it again (its
	// attempts spent under FailPark), parkErr its last failure.
	parkSeq int64
	parkErr error

	lastLockCheck   time.Time
	lastParkedCheck time.Time

	// wake receives the log's wake-ups for the consumer's kinds; chase is
	// the wait before the next poll after a wake-up that found nothing.
	wake       <-chan struct{}
	chase      time.Duration
	chaseUntil time.Time
}

// saveTimeout bounds the save of a page an external handler finished after
// the consumer was stopped.
const saveTimeout = 10 * time.Second

// restart makes a new follower from the stored position, reading one
// event at a time when one is true.
func (r *runner) restart(one bool) error {
	var pos eventlog.Position
	if err := json.Unmarshal([]byte(r.stored), &pos); err != nil {
		return fmt.Errorf("consumer %s: stored position %q: %w", r.c.cfg.Name, r.stored, err)
	}
	f, err := r.c.log.NewFollower(pos, r.c.followOptions(one))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", r.c.cfg.Name, err)
	}
	r.f = f
	return nil
}

// loop handles pages until ctx ends or something stops the consumer.
func (r *runner) loop(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := r.checkLock(ctx); err != nil {
			return err
		}
		var (
			idle bool
			err  error
		)
		if r.c.cfg.HandleTx != nil {
			idle, err = r.stepTx(ctx)
		} else {
			idle, err = r.stepExternal(ctx)
		}
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case !idle:
			r.chase = 0
		case r.chase == 0:
			// Caught up: the parked events an operator asked to retry.
			tried, err := r.retryParked(ctx)
			switch {
			case errors.Is(err, ErrDeposed):
				return err
			case err != nil && ctx.Err() == nil:
				// The request stays: tried again after PollInterval.
				r.c.cfg.Logger.Warn("consumer: retrying parked events", "consumer", r.c.cfg.Name, "error", err)
			case tried:
				continue
			}
			if r.waitWake(ctx, r.c.cfg.PollInterval) {
				r.startChase()
			}
		case r.chase > 0 && time.Now().Before(r.chaseUntil):
			// Woken, and nothing read: the event may be behind the
			// followers' horizon still (an older transaction running).
			d := r.chase
			r.chase = min(2*r.chase, maxChase)
			if r.waitWake(ctx, d) {
				r.startChase()
			}
		default:
			r.chase = 0
			if r.waitWake(ctx, r.c.cfg.PollInterval) {
				r.startChase()
			}
		}
	}
	return nil
}

// After a wake-up, until a poll reads events, the consumer polls again
// after minChase, doubling up to maxChase, for at most its PollInterval:
// an event a wake-up announces is readable only once every transaction
// older than its own has ended, and a wake-up comes once.
const (
	minChase = 2 * time.Millisecond
	maxChase = 64 * time.Millisecond
)

func (r *runner) startChase() {
	r.chase, r.chaseUntil = minChase, time.Now().Add(r.c.cfg.PollInterval)
}

// waitWake waits d, or until a wake-up comes (it then reports true), or
// ctx ends.
func (r *runner) waitWake(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return false
	case <-r.wake:
		return true
	}
}

// checkLock fails when the session holding the consumer's lock is gone:
// another instance may hold the lock now.
func (r *runner) checkLock(ctx context.Context) error {
	if r.lock == nil || time.Since(r.lastLockCheck) < lockCheckEvery {
		return nil
	}
	r.lastLockCheck = time.Now()
	if err := r.lock.PingContext(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("consumer %s: lost the session holding its lock: %w", r.c.cfg.Name, err)
	}
	return nil
}

// stepTx handles one page with HandleTx. It reports idle when there was
// nothing to handle.
func (r *runner) stepTx(ctx context.Context) (idle bool, err error) {
	var (
		events []eventlog.Event
		herr   error
	)
	err = dbutil.WithTx(ctx, r.c.db, nil, func(tx *sqlx.Tx) error {
		var err error
		if events, err = r.f.PollTx(ctx, tx); err != nil {
			return err
		}
		if len(events) > 0 {
			hctx, end := r.c.tel.handling(ctx, len(events))
			herr = r.c.cfg.HandleTx(hctx, tx, events)
			end(herr)
			if herr != nil {
				return herr
			}
		}
		return r.save(ctx, tx, events)
	})
	if err == nil {
		r.c.tel.done(ctx, len(events), "handled")
		r.handledOne(len(events))
		return len(events) == 0 && r.f.CaughtUp(), nil
	}
	if herr == nil || ctx.Err() != nil {
		return false, r.resync(ctx, err)
	}
	if err := r.resync(ctx, nil); err != nil {
		return false, err
	}
	park, err := r.failed(ctx, events[0], len(events), herr)
	if !park || err != nil {
		return false, err
	}
	// Nothing committed since the position: the event it failed on is
	// the next one read, alone.
	err = dbutil.WithTx(ctx, r.c.db, nil, func(tx *sqlx.Tx) error {
		again, err := r.f.PollTx(ctx, tx)
		if err != nil {
			return err
		}
		if len(again) != 1 || again[0].Seq != events[0].Seq {
			return fmt.Errorf("consumer %s: parking event %d, read %d events again", r.c.cfg.Name, events[0].Seq, len(again))
		}
		return r.park(ctx, tx, again[0], herr)
	})
	if err != nil {
		return false, r.resync(ctx, err)
	}
	r.c.tel.done(ctx, 1, "parked")
	r.handledOne(1)
	return false, nil
}

// stepExternal handles one page with Handle, one event at a time, or with
// HandleBatch, and saves the position after the page.
func (r *runner) stepExternal(ctx context.Context) (idle bool, err error) {
	events, err := r.f.Poll(ctx)
	if err != nil {
		return false, r.resync(ctx, err)
	}
	var pending []eventlog.Event // for HandleBatch
	handled := 0
	for _, ev := range events {
		if r.done[ev.Seq] {
			continue
		}
		if r.parkErr != nil && ev.Seq == r.parkSeq {
			// Read alone (isolated): the follower is just past it.
			if len(events) != 1 {
				return false, r.restart(true)
			}
			if err := dbutil.WithTx(ctx, r.c.db, nil, func(tx *sqlx.Tx) error { return r.park(ctx, tx, ev, r.parkErr) }); err != nil {
				return false, r.resync(ctx, err)
			}
			r.parkSeq, r.parkErr = 0, nil
			r.c.tel.done(ctx, 1, "parked")
			r.handledOne(1)
			return false, nil
		}
		if r.c.cfg.HandleBatch != nil {
			pending = append(pending, ev)
			continue
		}
		hctx, end := r.c.tel.handling(ctx, 1)
		herr := r.c.cfg.Handle(hctx, ev)
		end(herr)
		if herr != nil {
			return false, r.externalFailed(ctx, ev, len(events), herr)
		}
		r.done[ev.Seq] = true
		handled++
	}
	if len(pending) > 0 {
		hctx, end := r.c.tel.handling(ctx, len(pending))
		herr := r.c.cfg.HandleBatch(hctx, pending)
		end(herr)
		if herr != nil {
			return false, r.externalFailed(ctx, pending[0], len(pending), herr)
		}
		for _, ev := range pending {
			r.done[ev.Seq] = true
		}
		handled += len(pending)
	}
	// The page is handled: its position is saved even when ctx ended
	// meanwhile (a stop lets the handler in flight finish).
	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	if err := dbutil.WithTx(saveCtx, r.c.db, nil, func(tx *sqlx.Tx) error { return r.save(saveCtx, tx, events) }); err != nil {
		return false, r.resync(ctx, err)
	}
	for _, ev := range events {
		delete(r.done, ev.Seq)
	}
	r.c.tel.done(ctx, handled, "handled")
	r.handledOne(handled)
	return len(events) == 0 && r.f.CaughtUp(), nil
}

// externalFailed handles a failure of Handle or HandleBatch on a page of
// page events, ev the first of them not handled yet.
func (r *runner) externalFailed(ctx context.Context, ev eventlog.Event, page int, herr error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := r.resync(ctx, nil); err != nil {
		return err
	}
	park, err := r.failed(ctx, ev, page, herr)
	if park && err == nil {
		r.parkSeq, r.parkErr = ev.Seq, herr
	}
	return err
}

// handledOne notes a page of n events handled and committed: its
// position for the metrics, one event fewer to isolate, and no failure
// pending.
func (r *runner) handledOne(n int) {
	// After the commit, and after the events were counted: a reader of
	// the metrics that sees the position sees the counts up to it.
	r.c.handledSeq.Store(r.handled)
	if n > 0 {
		r.attempts = 0
		if r.isolate > 0 {
			if r.isolate--; r.isolate == 0 {
				_ = r.restart(false)
			}
		}
	}
}

// failed handles a failure of the handler on ev, in a page of page
// events, the follower restarted at the stored position: a page of
// several is retried one event at a time (for Handle, the events it
// handled are then saved one by one and not handled again); a single
// event is retried after a backoff until the attempts are spent. It then records the failure and
// returns a *HandlerError (FailStop), or reports that the event is to be
// parked (FailPark), the follower reading one event at a time.
func (r *runner) failed(ctx context.Context, ev eventlog.Event, page int, herr error) (park bool, err error) {
	cfg := r.c.cfg
	if r.isolate == 0 {
		r.isolate = page
		if page > 1 {
			return false, r.restart(true)
		}
	}
	r.attempts++
	cfg.Logger.Warn("consumer: handler failed", "consumer", cfg.Name, "seq", ev.Seq, "attempt", r.attempts, "of", cfg.Attempts, "error", herr)
	if r.attempts < cfg.Attempts {
		r.c.tel.retried(ctx)
		backoff := cfg.MinBackoff << min(r.attempts-1, 30)
		if backoff <= 0 || backoff > cfg.MaxBackoff {
			backoff = cfg.MaxBackoff
		}
		sleep(ctx, backoff)
		return false, r.restart(true)
	}
	if cfg.OnFailure == FailPark {
		cfg.Logger.Warn("consumer: parking the event", "consumer", cfg.Name, "seq", ev.Seq, "attempts", r.attempts, "error", herr)
		return true, r.restart(true)
	}
	he := &HandlerError{Consumer: cfg.Name, Seq: ev.Seq, Attempts: r.attempts, Err: herr}
	res, err := r.c.db.ExecContext(context.WithoutCancel(ctx), r.c.db.Rebind(`UPDATE canonlog_consumers SET failed_seq = ?, failure = ?, updated_at = ?
WHERE name = ? AND generation = ?`), ev.Seq, herr.Error(), eventlog.FormatTime(time.Now()), cfg.Name, r.gen)
	if err != nil {
		return false, errors.Join(he, fmt.Errorf("record the failure: %w", err))
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return false, fmt.Errorf("consumer %s: %w", cfg.Name, ErrDeposed)
	}
	return false, he
}

// park records ev as parked and moves the position past it, in tx; the
// follower has just read ev, alone.
func (r *runner) park(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event, herr error) error {
	if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO canonlog_consumer_parked (consumer, seq, attempts, failure, parked_at)
VALUES (?, ?, ?, ?, ?)`), r.c.cfg.Name, ev.Seq, r.attempts, herr.Error(), eventlog.FormatTime(time.Now())); err != nil {
		return err
	}
	return r.save(ctx, tx, []eventlog.Event{ev})
}

// save moves the stored position to the follower's, in tx, fenced by the
// generation and the position this instance last stored: 0 rows means
// another instance or a reset moved it.
func (r *runner) save(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	b, err := json.Marshal(r.f.Position())
	if err != nil {
		return err
	}
	next := string(b)
	if next == r.stored {
		return nil
	}
	handled := r.handled
	if len(events) > 0 {
		handled = events[len(events)-1].Seq
	}
	res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE canonlog_consumers SET position = ?, handled_seq = ?, failed_seq = NULL, failure = NULL, updated_at = ?
WHERE name = ? AND generation = ? AND position = ?`), next, handled, eventlog.FormatTime(time.Now()), r.c.cfg.Name, r.gen, r.stored)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("consumer %s: %w", r.c.cfg.Name, ErrDeposed)
	}
	r.stored, r.handled = next, handled
	return nil
}

// resync reads the stored position after a transaction that failed with
// cause (nil for a handler's failure), whose commit may or may not have
// happened, and restarts the follower from it. It returns ErrDeposed when
// another instance owns the consumer now, and cause otherwise, unless
// cause is one that trying again mends (eventlog.Retryable): it then
// waits MinBackoff and returns nil.
func (r *runner) resync(ctx context.Context, cause error) error {
	if errors.Is(cause, ErrDeposed) {
		return cause
	}
	var (
		gen     int64
		stored  string
		handled int64
	)
	err := r.c.db.QueryRowxContext(ctx, r.c.db.Rebind(`SELECT generation, position, handled_seq FROM canonlog_consumers WHERE name = ?`), r.c.cfg.Name).Scan(&gen, &stored, &handled)
	switch {
	case err != nil && cause != nil:
		return errors.Join(cause, err)
	case err != nil:
		return fmt.Errorf("consumer %s: %w", r.c.cfg.Name, err)
	case gen != r.gen:
		return fmt.Errorf("consumer %s: %w", r.c.cfg.Name, ErrDeposed)
	}
	if stored != r.stored {
		// The failed transaction committed after all.
		clear(r.done)
	}
	r.stored, r.handled = stored, handled
	if err := r.restart(r.isolate > 0); err != nil {
		return err
	}
	if cause != nil && !eventlog.Retryable(cause) {
		return fmt.Errorf("consumer %s: %w", r.c.cfg.Name, cause)
	}
	if cause != nil {
		r.c.cfg.Logger.Warn("consumer: retrying after an error", "consumer", r.c.cfg.Name, "error", cause)
		sleep(ctx, r.c.cfg.MinBackoff)
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
