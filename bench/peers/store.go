package peers

import (
	"context"
	"database/sql"
	"time"
)

// store is one contender's event store in a fresh schema of its own.
// Events are numbered: event i is the workload's event i (workload.go).
type store interface {
	// open connects to the empty schema that url's search_path names and
	// creates the contender's tables there, as its documentation says to.
	open(ctx context.Context, url string) error
	// appendOne stores event i, in a call of its own.
	appendOne(ctx context.Context, i int) error
	// appendBatch stores events first … first+n-1 in one call.
	appendBatch(ctx context.Context, first, n int) error
	// replay reads every stored event back, in the store's order, and
	// returns how many it read and the bytes of their payloads. want is
	// how many the store holds: a subscriber cannot tell the end of a
	// log from a pause.
	replay(ctx context.Context, want int64) (events, payloadBytes int64, err error)
	// count returns how many events the store holds, by SQL.
	count(ctx context.Context) (int64, error)
	// close releases the store's connections.
	close() error
}

// Pool settings of every store's *sql.DB, the same for all sides:
// eventlog.OpenDB's, so that concurrent clients do not reconnect.
const (
	poolIdleConns   = 16
	poolIdleTimeout = 5 * time.Minute
)

func configurePool(db *sql.DB) {
	db.SetMaxIdleConns(poolIdleConns)
	db.SetConnMaxIdleTime(poolIdleTimeout)
}
