package bench

import (
	"context"
	"database/sql"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
)

// query measures the compliance gate's queries and a query by host: a set
// is probefailures.Store's Failures (a page of 100), FailingHosts,
// CountFailingHosts and Summary for one rollout plus Log.Query of one
// host's events (up to 100), against the same SELECTs by hand, unprepared
// as canonlog sends them, scanned into the same Go types. Rates are
// queries per second.
func (r *run) query(ctx context.Context) (Result, error) {
	b, err := r.fill(ctx)
	if err != nil {
		return Result{}, err
	}
	sets := max(r.cfg.Events/100, 10)
	store := probefailures.NewStore(b.db)
	ours := func(ctx context.Context) (int, error) {
		for i := range sets {
			rollout, control, host := r.queryArgs(i)
			if _, err := store.Failures(ctx, probefailures.FailureFilter{RolloutID: rollout, Limit: 100}); err != nil {
				return 0, err
			}
			if _, err := store.FailingHosts(ctx, rollout, control); err != nil {
				return 0, err
			}
			if _, err := store.CountFailingHosts(ctx, rollout); err != nil {
				return 0, err
			}
			if _, err := store.Summary(ctx, rollout); err != nil {
				return 0, err
			}
			if _, err := b.bare.Query(ctx, eventlog.Filter{HostID: host, Limit: 100}); err != nil {
				return 0, err
			}
		}
		return sets * 5, nil
	}
	db := b.db
	var (
		qFailures = db.Rebind(`SELECT event_log_seq, COALESCE(rollout_id, ''), host_id, probe_name, control_id, framework, observed_at
FROM probe_failures WHERE rollout_id = ? ORDER BY host_id, control_id, event_log_seq, framework LIMIT ?`)
		qHosts   = db.Rebind(`SELECT DISTINCT host_id FROM probe_failures WHERE rollout_id = ? AND control_id = ? ORDER BY host_id`)
		qCount   = db.Rebind(`SELECT COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = ?`)
		qSummary = db.Rebind(`SELECT control_id, framework, COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = ?
GROUP BY control_id, framework ORDER BY control_id, framework`)
		qByHost = db.Rebind(`SELECT seq, ts, kind, host_id, rollout_id, payload, event_id FROM event_log WHERE host_id = ? ORDER BY seq LIMIT ?`)
	)
	type failure struct {
		seq                                      int64
		rollout, host, probe, control, framework string
		observed                                 time.Time
	}
	type summary struct {
		control, framework string
		hosts              int
	}
	raw := func(ctx context.Context) (int, error) {
		for i := range sets {
			rollout, control, host := r.queryArgs(i)
			fs := make([]failure, 0, 100)
			err := scanAll(ctx, db, qFailures, []any{rollout, 100}, func(rows *sql.Rows) error {
				var f failure
				err := rows.Scan(&f.seq, &f.rollout, &f.host, &f.probe, &f.control, &f.framework, eventlog.ScanTime(&f.observed))
				fs = append(fs, f)
				return err
			})
			if err != nil {
				return 0, err
			}
			hosts := []string{}
			err = scanAll(ctx, db, qHosts, []any{rollout, control}, func(rows *sql.Rows) error {
				var h string
				err := rows.Scan(&h)
				hosts = append(hosts, h)
				return err
			})
			if err != nil {
				return 0, err
			}
			var n int
			if err := db.QueryRowContext(ctx, qCount, rollout).Scan(&n); err != nil {
				return 0, err
			}
			sums := []summary{}
			err = scanAll(ctx, db, qSummary, []any{rollout}, func(rows *sql.Rows) error {
				var s summary
				err := rows.Scan(&s.control, &s.framework, &s.hosts)
				sums = append(sums, s)
				return err
			})
			if err != nil {
				return 0, err
			}
			evs := make([]eventlog.Event, 0, 100)
			err = scanAll(ctx, db, qByHost, []any{host, 100}, func(rows *sql.Rows) error {
				var (
					ev                     eventlog.Event
					kind                   string
					hostID, rolloutID, eid sql.NullString
					payload                []byte
				)
				err := rows.Scan(&ev.Seq, eventlog.ScanTime(&ev.TS), &kind, &hostID, &rolloutID, &payload, &eid)
				ev.Kind, ev.HostID, ev.RolloutID, ev.EventID = eventlog.Kind(kind), hostID.String, rolloutID.String, eid.String
				ev.Payload = payload
				evs = append(evs, ev)
				return err
			})
			if err != nil {
				return 0, err
			}
		}
		return sets * 5, nil
	}
	if _, err := ours(ctx); err != nil { // warms the caches
		return Result{}, err
	}
	return r.alternate(ctx, ScenarioQuery, "queries", ours, raw)
}

// queryArgs spreads the query sets over the history's rollouts, controls
// and hosts.
func (r *run) queryArgs(i int) (rollout, control, host string) {
	g, controls := r.mix.all, r.mix.controls
	return g.Rollout(i % g.Rollouts()), controls[i*7%len(controls)], g.Host(i * 37 % g.Hosts())
}

func scanAll(ctx context.Context, db *sqlx.DB, query string, args []any, scan func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
