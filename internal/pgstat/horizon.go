package pgstat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
)

// Queryer is what ReadHorizon needs of a database.
type Queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ Queryer = (*sql.DB)(nil)
	_ Queryer = (*sqlx.DB)(nil)
	_ Queryer = (*sqlx.Conn)(nil)
)

// Horizon is the transaction that holds followers back: the oldest one
// in progress on the server, by transaction id.
type Horizon struct {
	// TxID is its transaction id (xid8): the horizon itself. Followers
	// deliver the events of transactions below it.
	TxID uint64
	// PID is the process id of the session running it; 0 for a prepared
	// transaction (PREPARE TRANSACTION), which no session runs and which
	// holds the horizon until COMMIT PREPARED or ROLLBACK PREPARED, and 0
	// when the session was not found (see Started).
	PID int
	// State is the session's pg_stat_activity.state ("idle in
	// transaction", "active", …), "prepared" for a prepared transaction,
	// "" when unknown.
	State string
	// Database is the database the transaction runs in: the horizon is
	// the whole server's, so a transaction in another database holds
	// followers back too. "" when unknown.
	Database string
	// Started is when the transaction began (pg_stat_activity.xact_start,
	// or when it was prepared). Zero when unknown: the session belongs to
	// another role and the reading role may not see its details (members
	// of pg_read_all_stats may), or it ended between the two reads.
	Started time.Time
	// Age is how long it has run, by the server's clock (0 when Started
	// is unknown). It counts from the transaction's start, which may be
	// earlier than its first write, when it took its id and began to hold
	// the horizon.
	Age time.Duration
}

// horizonQuery reads the horizon as Follower does, and joins the session
// or prepared transaction that holds it (backend_xid is the 32-bit xid,
// which the xid8 horizon casts to). The horizon is below the snapshot's
// xmax when a transaction is in progress, and equal to it when none is —
// or when the oldest one took its id after the last transaction ended
// (xmax is one past the latest completed), which the join finds. No row:
// nothing is in progress.
const horizonQuery = `SELECT h.xmin::text, COALESCE(a.pid, 0), COALESCE(a.state, ''), COALESCE(a.datname, ''), a.started,
  COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - a.started), 0)::float8
FROM (SELECT pg_snapshot_xmin(s.snap) AS xmin, pg_snapshot_xmax(s.snap) AS xmax FROM pg_current_snapshot() AS s(snap)) AS h
LEFT JOIN LATERAL (
  SELECT TRUE AS found, pid, state, datname::text, xact_start AS started FROM pg_stat_activity WHERE backend_xid = h.xmin::xid
  UNION ALL
  SELECT TRUE, NULL, 'prepared', database::text, prepared FROM pg_prepared_xacts WHERE transaction = h.xmin::xid
  LIMIT 1
) AS a ON TRUE
WHERE h.xmin < h.xmax OR a.found`

// ReadHorizon returns the transaction that holds followers back on the
// PostgreSQL server q is connected to; ok is false when no transaction
// is in progress, and nothing holds them back.
//
// Run it outside a transaction that wrote (one with a transaction id):
// PostgreSQL leaves the reading transaction out of its own snapshot, so
// it would not see itself holding the horizon.
func ReadHorizon(ctx context.Context, q Queryer) (h Horizon, ok bool, err error) {
	var (
		xmin    string
		started sql.NullTime
		age     float64
	)
	err = q.QueryRowContext(ctx, horizonQuery).Scan(&xmin, &h.PID, &h.State, &h.Database, &started, &age)
	if errors.Is(err, sql.ErrNoRows) {
		return Horizon{}, false, nil
	}
	if err != nil {
		return Horizon{}, false, fmt.Errorf("pgstat: read the tail horizon: %w", err)
	}
	if h.TxID, err = strconv.ParseUint(xmin, 10, 64); err != nil {
		return Horizon{}, false, fmt.Errorf("pgstat: tail horizon %q: %w", xmin, err)
	}
	if started.Valid {
		h.Started = started.Time
		h.Age = time.Duration(max(age, 0) * float64(time.Second))
	}
	return h, true, nil
}

// HorizonAge is ReadHorizon's age alone: how long the transaction that
// holds followers back has run; ok is false when none does.
func HorizonAge(ctx context.Context, q Queryer) (age time.Duration, ok bool, err error) {
	h, ok, err := ReadHorizon(ctx, q)
	return h.Age, ok, err
}
