package bench

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// appends measures single appends from clients goroutines, per events per
// side per round, of the run's history. Each side appends into a fresh
// database of its own (the canonlog side through a log without hook — the
// core's cost, as in eventlog's benchmarks), so table and index sizes grow
// alike on both. Both carry an event id, so both maintain the unique
// index on it.
func (r *run) appends(ctx context.Context, name string, clients, per int) (Result, error) {
	ours, theirs, err := r.freshPair(ctx)
	if err != nil {
		return Result{}, err
	}
	// The raw INSERT is prepared once, as canonlog prepares its own:
	// unprepared, lib/pq would spend a second round trip per INSERT.
	stmt, err := theirs.db.PreparexContext(ctx, theirs.db.Rebind(`INSERT INTO event_log (ts, kind, host_id, rollout_id, payload, event_id)
VALUES (?, ?, ?, ?, ?, ?) RETURNING seq`))
	if err != nil {
		return Result{}, err
	}
	defer stmt.Close()
	var nOurs, nRaw int
	ourAppend := func(ctx context.Context, i int) error {
		_, err := ours.bare.Append(ctx, r.mix.entry(i, "evt-"+strconv.Itoa(i)))
		return err
	}
	rawAppend := func(ctx context.Context, i int) error {
		e := r.mix.entry(i, "evt-"+strconv.Itoa(i))
		tx, err := theirs.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		var seq int64
		if err := tx.StmtContext(ctx, stmt.Stmt).QueryRowContext(ctx, rawTS(theirs.d, e.TS), string(e.Kind), rawID(e.HostID), rawID(e.RolloutID), string(e.Payload), e.EventID).Scan(&seq); err != nil {
			return err
		}
		return tx.Commit()
	}
	// Untimed warm-up: opens the clients' connections and prepares.
	if err := fanOut(ctx, clients, clients, &nOurs, ourAppend); err != nil {
		return Result{}, err
	}
	if err := fanOut(ctx, clients, clients, &nRaw, rawAppend); err != nil {
		return Result{}, err
	}
	return r.alternate(ctx, name, "events",
		func(ctx context.Context) (int, error) { return per, fanOut(ctx, clients, per, &nOurs, ourAppend) },
		func(ctx context.Context) (int, error) { return per, fanOut(ctx, clients, per, &nRaw, rawAppend) })
}

// fanOut calls f n times from clients goroutines with numbers *next,
// *next+1, … and advances *next.
func fanOut(ctx context.Context, clients, n int, next *int, f func(context.Context, int) error) error {
	first := *next
	*next += n
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for c := range clients {
		wg.Go(func() {
			for i := c; i < n; i += clients {
				if err := f(ctx, first+i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

const batchSize = 1000

// appendBatch measures batches of 1,000 events of the run's history (no
// event ids) with probe_failures derived in the same transaction. Each side writes into a fresh database
// of its own. The raw side is what one would write by hand: on PostgreSQL
// COPY of the events then one set-based INSERT … SELECT deriving their
// rows; on SQLite (no COPY) one prepared INSERT per event then the same
// set-based insert; one transaction per batch.
func (r *run) appendBatch(ctx context.Context, batches int) (Result, error) {
	ours, theirs, err := r.freshPair(ctx)
	if err != nil {
		return Result{}, err
	}
	var nOurs, nRaw int
	ourBatch := func(ctx context.Context) error {
		batch := make([]eventlog.Entry, batchSize)
		for j := range batch {
			batch[j] = r.mix.entry(nOurs+j, "")
		}
		nOurs += batchSize
		_, err := ours.log.AppendBatch(ctx, batch)
		return err
	}
	rawBatch := func(ctx context.Context) error {
		batch := make([]eventlog.Entry, batchSize)
		for j := range batch {
			batch[j] = r.mix.entry(nRaw+j, "")
		}
		nRaw += batchSize
		return rawAppendBatch(ctx, theirs, batch)
	}
	if err := ourBatch(ctx); err != nil {
		return Result{}, err
	}
	if err := rawBatch(ctx); err != nil {
		return Result{}, err
	}
	loop := func(f func(context.Context) error) side {
		return func(ctx context.Context) (int, error) {
			for range batches {
				if err := f(ctx); err != nil {
					return 0, err
				}
			}
			return batches * batchSize, nil
		}
	}
	return r.alternate(ctx, ScenarioAppendBatch, "events", loop(ourBatch), loop(rawBatch))
}

// rawAppendBatch is the raw side of append-batch: the events inserted (COPY
// on PostgreSQL), then their probe_failures rows derived in one set-based
// INSERT … SELECT, in one transaction.
func rawAppendBatch(ctx context.Context, b *benchDB, batch []eventlog.Entry) error {
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var last int64
	if err := tx.GetContext(ctx, &last, `SELECT COALESCE(MAX(seq), 0) FROM event_log`); err != nil {
		return err
	}
	if err := rawInsert(ctx, tx, b.d, batch); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, deriveRows(b.d), last); err != nil {
		return err
	}
	return tx.Commit()
}

// rawInsert inserts the events in tx without their event ids: COPY on
// PostgreSQL, one prepared INSERT per event on SQLite (which has no COPY).
func rawInsert(ctx context.Context, tx *sqlx.Tx, d eventlog.Backend, batch []eventlog.Entry) error {
	query := `COPY event_log (ts, kind, host_id, rollout_id, payload) FROM STDIN`
	if d == eventlog.SQLite {
		query = `INSERT INTO event_log (ts, kind, host_id, rollout_id, payload) VALUES (?, ?, ?, ?, ?)`
	}
	stmt, err := tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	for _, e := range batch {
		if _, err := stmt.ExecContext(ctx, rawTS(d, e.TS), string(e.Kind), rawID(e.HostID), rawID(e.RolloutID), string(e.Payload)); err != nil {
			_ = stmt.Close()
			return err
		}
	}
	if d == eventlog.Postgres {
		if _, err := stmt.ExecContext(ctx); err != nil { // ends the COPY
			_ = stmt.Close()
			return err
		}
	}
	return stmt.Close()
}
