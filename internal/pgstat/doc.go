// Package pgstat reads PostgreSQL's view of the transactions that hold
// canonlog back, for the status command and the library's metrics.
//
// The tail horizon is what eventlog.Follower waits for: a follower
// delivers only events of transactions older than the oldest transaction
// still in progress on the server, pg_snapshot_xmin(pg_current_snapshot()).
// ReadHorizon says which transaction that is and how old it is:
//
//	h, ok, err := pgstat.ReadHorizon(ctx, db)
//	if err == nil && ok && h.Age > time.Minute {
//		slog.Warn("a transaction holds followers back", "pid", h.PID, "state", h.State, "age", h.Age)
//	}
package pgstat
