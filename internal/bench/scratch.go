package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/scratchdb"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// run is one Run's state: its scratch databases.
type run struct {
	cfg    Config
	mix    mix
	set    *scratchdb.Set
	dbs    []*benchDB
	filled *benchDB // the shared log of read, rebuild and query, filled once
}

// benchDB is one fresh, migrated scratch database.
type benchDB struct {
	db   *sqlx.DB
	d    eventlog.Backend
	reg  *projection.Registry
	log  *eventlog.Log // appends through the registry: probe_failures inline
	bare *eventlog.Log // no hook: the core alone
}

// freshPair returns two fresh databases: one for each side of a scenario
// that writes, so that table and index sizes grow alike on both.
func (r *run) freshPair(ctx context.Context) (ours, theirs *benchDB, err error) {
	if ours, err = r.fresh(ctx); err != nil {
		return nil, nil, err
	}
	if theirs, err = r.fresh(ctx); err != nil {
		return nil, nil, err
	}
	return ours, theirs, nil
}

// fresh creates, opens and migrates a new scratch database.
func (r *run) fresh(ctx context.Context) (*benchDB, error) {
	sdb, err := r.set.Create(ctx)
	if err != nil {
		return nil, err
	}
	b, err := r.open(ctx, sdb.URL)
	if err != nil {
		return nil, err
	}
	if _, err := projection.Migrate(ctx, b.log, b.reg); err != nil {
		return nil, fmt.Errorf("migrate scratch database: %w", err)
	}
	return b, nil
}

// open opens a pool of its own on a scratch database, with a registry of
// its own: another process's view of the same database.
func (r *run) open(ctx context.Context, url string) (*benchDB, error) {
	db, err := eventlog.OpenDB(ctx, url)
	if err != nil {
		return nil, err
	}
	b := &benchDB{db: db, d: r.set.Dialect(), reg: projection.Must(projection.NewRegistry(probefailures.New()))}
	r.dbs = append(r.dbs, b)
	if b.log, err = eventlog.New(db, &eventlog.Config{Hook: b.reg}); err != nil {
		return nil, err
	}
	if b.bare, err = eventlog.New(db, nil); err != nil {
		return nil, err
	}
	return b, nil
}

// close closes every scratch pool, then removes every scratch database.
func (r *run) close() error {
	var errs []error
	for _, b := range r.dbs {
		if b.log != nil {
			_ = b.log.Close()
		}
		if b.bare != nil {
			_ = b.bare.Close()
		}
		errs = append(errs, b.db.Close())
	}
	errs = append(errs, r.set.Close())
	return errors.Join(errs...)
}
