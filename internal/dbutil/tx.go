// Package dbutil holds the transaction helpers shared by canonlog's packages.
package dbutil

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// ErrBegin is wrapped by the error of a WithTx whose BEGIN failed: nothing
// ran.
var ErrBegin = errors.New("begin transaction")

// CommitError is returned by WithTx when the COMMIT itself fails. Its
// outcome is unknown when the connection was lost: the server may have
// committed before the answer was lost on the way back.
type CommitError struct{ Err error }

func (e *CommitError) Error() string { return "commit: " + e.Err.Error() }

func (e *CommitError) Unwrap() error { return e.Err }

// WithTx runs fn inside a transaction on db: it commits when fn returns nil
// and rolls back otherwise (also when fn panics, before re-panicking, and
// when ctx ended before the commit).
//
// The transaction is begun on a connection taken from the pool with ctx
// (a wait for one ends with ctx), under a context that is never
// cancelled. database/sql rolls back a transaction whose context ends on
// a goroutine of its own, at once, while a driver call may still be using
// the connection: lib/pq's COPY reads the connection on a goroutine that
// nothing waits for after a failure (lib/pq#1401), and the race detector
// caught the two reading at once in the soak that kills connections.
// fn's statements still take ctx, so ctx ending stops them; the rollback
// is WithTx's, after fn returned.
func WithTx(ctx context.Context, db *sqlx.DB, opts *sql.TxOptions, fn func(tx *sqlx.Tx) error) (err error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBegin, err)
	}
	defer func() { _ = conn.Close() }()
	tx, err := conn.BeginTxx(context.WithoutCancel(ctx), opts)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBegin, err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	err = fn(tx)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		if rbErr := rollback(tx); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return &CommitError{Err: err}
	}
	return nil
}

func rollback(tx *sqlx.Tx) error {
	// A transaction already ended reports ErrTxDone, which is no error for
	// the caller. Nor is a lost connection: the server rolls back the
	// transaction of a connection that goes away.
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) && !errors.Is(err, driver.ErrBadConn) {
		return err
	}
	return nil
}

// Discard closes conn's database connection instead of returning it to
// the pool, where it could hold an open or failed transaction or a
// session setting. A connection database/sql already closed is left as
// it is.
func Discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}
