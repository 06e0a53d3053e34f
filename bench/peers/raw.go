package peers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
)

// rawStore is what one would write by hand with lib/pq against canonlog's
// own event_log table (created by canonlog's migrations, so both sides
// maintain the same indexes and triggers): a prepared INSERT in a
// transaction of its own per event, COPY per batch, and a keyset SELECT
// loop in pages as large as canonlog's to read back.
type rawStore struct {
	db     *sqlx.DB
	insert *sql.Stmt
	page   *sql.Stmt
}

func (s *rawStore) open(ctx context.Context, url string) error {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return err
	}
	s.db = db
	configurePool(db.DB)
	if _, err := migrations.Up(ctx, db); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Prepared once, as canonlog prepares its own: unprepared, lib/pq
	// would spend a second round trip per statement.
	if s.insert, err = db.PrepareContext(ctx, `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload)
VALUES ($1, $2, $3, $4, $5) RETURNING seq`); err != nil {
		return err
	}
	s.page, err = db.PrepareContext(ctx, `SELECT seq, ts, kind, host_id, rollout_id, payload, event_id
FROM event_log WHERE seq > $1 ORDER BY seq LIMIT $2`)
	return err
}

func (s *rawStore) appendOne(ctx context.Context, i int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var seq int64
	if err := tx.StmtContext(ctx, s.insert).QueryRowContext(ctx,
		time.Now(), eventKind, hostID(i), rolloutID(i), string(payload(i))).Scan(&seq); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *rawStore) appendBatch(ctx context.Context, first, n int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, `COPY event_log (ts, kind, host_id, rollout_id, payload) FROM STDIN`)
	if err != nil {
		return err
	}
	now := time.Now()
	for i := first; i < first+n; i++ {
		if _, err := st.ExecContext(ctx, now, eventKind, hostID(i), rolloutID(i), string(payload(i))); err != nil {
			_ = st.Close()
			return err
		}
	}
	if _, err := st.ExecContext(ctx); err != nil { // ends the COPY
		_ = st.Close()
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *rawStore) replay(ctx context.Context, _ int64) (events, payloadBytes int64, err error) {
	const pageSize = eventlog.DefaultPageSize
	var last int64
	for {
		n, b, err := s.readPage(ctx, &last, pageSize)
		events, payloadBytes = events+int64(n), payloadBytes+b
		if err != nil || n < pageSize {
			return events, payloadBytes, err
		}
	}
}

// readPage reads the page of events after seq *last, scanning every
// column as an application would, and moves *last to its last seq.
func (s *rawStore) readPage(ctx context.Context, last *int64, limit int) (n int, payloadBytes int64, err error) {
	rows, err := s.page.QueryContext(ctx, *last, limit)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	var (
		seq                    int64
		ts                     time.Time
		kind                   string
		host, rollout, eventID sql.NullString
		body                   []byte
	)
	for rows.Next() {
		if err := rows.Scan(&seq, &ts, &kind, &host, &rollout, &body, &eventID); err != nil {
			return n, payloadBytes, err
		}
		if seq <= *last {
			return n, payloadBytes, fmt.Errorf("seq %d read after seq %d", seq, *last)
		}
		*last = seq
		n++
		payloadBytes += int64(len(body))
	}
	return n, payloadBytes, rows.Err()
}

func (s *rawStore) count(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM event_log`).Scan(&n)
	return n, err
}

func (s *rawStore) close() error {
	if s.db == nil {
		return nil
	}
	var errs []error
	for _, st := range []*sql.Stmt{s.insert, s.page} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, s.db.Close())...)
}
