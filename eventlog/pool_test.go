package eventlog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// A pool smaller than the number of concurrent appenders must only make
// them queue. A first append of one shape (single, batch) used to prepare
// its statement on the pool while holding the log's statement lock, and
// the appends holding every connection of the pool inside their
// transactions waited for that lock: neither side could move.
func TestAppendsQueueOnASmallPool(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		db := dbtest.New(t, backend).Migrated(t)
		db.SetMaxOpenConns(2)
		const writers = 12
		for round := range 5 {
			// A fresh log each round: its statements are not prepared yet.
			log, err := eventlog.New(db, nil)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Go(func() {
					e := entry(fmt.Sprint("w", w), fmt.Sprintf(`{"round":%d}`, round))
					var err error
					if w%2 == 0 {
						_, err = log.Append(ctx, e)
					} else {
						_, err = log.AppendBatch(ctx, []eventlog.Entry{e, e})
					}
					errs <- err
				})
			}
			wg.Wait()
			cancel()
			close(errs)
			for err := range errs {
				require.NoError(t, err, "round %d", round)
			}
			require.NoError(t, log.Close())
		}
		require.Equal(t, 5*(writers/2+writers), countEvents(t, db))
	})
}
