package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

// fillChunk is how many events the fill inserts per transaction.
const fillChunk = 10_000

// fill returns the shared log of the read, rebuild and query scenarios:
// the first N events of the run's history (as the write scenarios append
// them, without event ids), inserted in SQL — COPY on PostgreSQL,
// prepared INSERTs on SQLite, 10,000 per transaction —, statistics
// gathered (unless Config.NoStatistics), probe_failures derived by one
// untimed rebuild, the WAL checkpointed. Reads change nothing and the
// rebuilds of both sides leave the same rows, so the sides share it.
func (r *run) fill(ctx context.Context) (*benchDB, error) {
	if r.filled != nil {
		return r.filled, nil
	}
	b, err := r.fresh(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	analyze, post := []string{`VACUUM (ANALYZE) event_log`}, []string{`CHECKPOINT`}
	if b.d == eventlog.SQLite {
		analyze, post = []string{`ANALYZE`}, []string{`ANALYZE`, `PRAGMA wal_checkpoint(TRUNCATE)`}
	}
	if r.cfg.NoStatistics {
		analyze, post = nil, post[len(post)-1:]
		if b.d == eventlog.Postgres {
			if err := execAll(ctx, b, []string{`ALTER TABLE event_log SET (autovacuum_enabled = false)`,
				`ALTER TABLE probe_failures SET (autovacuum_enabled = false)`}); err != nil {
				return nil, err
			}
		}
	}
	if err := fillRaw(ctx, b, r.mix, r.cfg.Events); err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	if err := execAll(ctx, b, analyze); err != nil {
		return nil, err
	}
	if _, err := projection.Rebuild(ctx, b.log, b.reg, nil); err != nil {
		return nil, err
	}
	if err := execAll(ctx, b, post); err != nil {
		return nil, err
	}
	fmt.Fprintf(r.cfg.Progress, "bench: filled %d events in %s\n", r.cfg.Events, time.Since(start).Round(time.Millisecond))
	r.filled = b
	return b, nil
}

func execAll(ctx context.Context, b *benchDB, queries []string) error {
	for _, q := range queries {
		if _, err := b.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// fillRaw inserts events 0 to n-1 of m's history into b, without event ids
// and without deriving anything.
func fillRaw(ctx context.Context, b *benchDB, m mix, n int) error {
	chunk := make([]eventlog.Entry, 0, fillChunk)
	for first := 0; first < n; first += fillChunk {
		chunk = chunk[:0]
		for i := first; i < min(first+fillChunk, n); i++ {
			chunk = append(chunk, m.entry(i, ""))
		}
		tx, err := b.db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if err := rawInsert(ctx, tx, b.d, chunk); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
