package bench

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

// read measures streaming the whole log: log.Events against the keyset
// loop one would write, with the same page size, scanning into the types
// an Event holds.
func (r *run) read(ctx context.Context) (Result, error) {
	b, err := r.fill(ctx)
	if err != nil {
		return Result{}, err
	}
	ours := func(ctx context.Context) (int, error) {
		n := 0
		for _, err := range b.bare.Events(ctx, 0, nil) {
			if err != nil {
				return n, err
			}
			n++
		}
		return n, nil
	}
	query := b.db.Rebind(`SELECT seq, ts, kind, host_id, rollout_id, payload, event_id FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?`)
	raw := func(ctx context.Context) (int, error) {
		var after int64
		n := 0
		for {
			rows, err := b.db.QueryContext(ctx, query, after, eventlog.DefaultPageSize)
			if err != nil {
				return n, err
			}
			got := 0
			for rows.Next() {
				var (
					ts                     time.Time
					kind                   string
					host, rollout, eventID sql.NullString
					payload                []byte
				)
				if err := rows.Scan(&after, eventlog.ScanTime(&ts), &kind, &host, &rollout, &payload, &eventID); err != nil {
					_ = rows.Close()
					return n, err
				}
				got++
			}
			if err := errors.Join(rows.Close(), rows.Err()); err != nil {
				return n, err
			}
			n += got
			if got < eventlog.DefaultPageSize {
				return n, nil
			}
		}
	}
	if _, err := ours(ctx); err != nil { // warms the caches
		return Result{}, err
	}
	return r.alternate(ctx, ScenarioRead, "events", ours, raw)
}
