package projection

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
	"github.com/canonlog/canonlog/internal/dialect"
	"github.com/canonlog/canonlog/migrations"
)

// Migrate applies canonlog's core migrations, then each registered
// projection's own, then installs projections that have no checkpoint yet:
// one installed on a log that holds no event of its kinds is complete by
// definition and is recorded as built at its version. One installed on a
// log that already holds such events stays "never built" (stale) until
// rebuilt.
func Migrate(ctx context.Context, log *eventlog.Log, reg *Registry) ([]migrations.Result, error) {
	res, err := migrations.Up(ctx, log.DB(), reg.MigrationSets()...)
	if err != nil {
		return res, err
	}
	return res, Install(ctx, log, reg)
}

// Install records a checkpoint for each registered projection that has none
// and whose kinds do not occur in the log yet (see Migrate).
func Install(ctx context.Context, log *eventlog.Log, reg *Registry) error {
	cps, err := readCheckpoints(ctx, log.DB())
	if err != nil {
		return err
	}
	entries, _ := reg.selectEntries(nil)
	d, err := dialect.Of(log.DB())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := cps[e.name]; ok {
			continue
		}
		err := dbutil.WithTx(ctx, log.DB(), nil, func(tx *sqlx.Tx) error {
			if err := lockExclusive(ctx, tx, d, e.name); err != nil {
				return err
			}
			var found int
			for _, err := range log.PagesTx(ctx, tx, 0, &eventlog.ReadOptions{PageSize: 1, Kinds: e.kindList()}) {
				if err != nil {
					return err
				}
				found++
				break
			}
			if found > 0 {
				return nil // events exist: it needs a real rebuild
			}
			last, err := lastSeqTx(ctx, tx)
			if err != nil {
				return err
			}
			return writeCheckpoint(ctx, tx, e.name, checkpoint{Version: e.p.Version(), Seq: last, At: log.Clock().Now()})
		})
		if err != nil {
			return fmt.Errorf("projection %s: install: %w", e.name, err)
		}
	}
	return nil
}

func lastSeqTx(ctx context.Context, tx *sqlx.Tx) (int64, error) {
	var seq int64
	if err := tx.QueryRowxContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM event_log`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("read last seq: %w", err)
	}
	return seq, nil
}
