package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"

	"github.com/canonlog/canonlog/eventlog"
)

//go:embed postgres/*.sql sqlite/*.sql
var coreFiles embed.FS

// CoreTable is the goose version table of canonlog's core migrations.
const CoreTable = "canonlog_migrations"

// Set is one migration history: canonlog's core schema, or the tables of one
// projection. Each set has its own goose version table.
type Set struct {
	// Name identifies the set: the projection's name. It must match
	// ^[a-z][a-z0-9_]*$ and names the version table
	// canonlog_migrations_<Name>. (Core() is the only set without a name.)
	Name string
	// Postgres holds the goose SQL files for PostgreSQL, at its root.
	Postgres fs.FS
	// SQLite holds the goose SQL files for SQLite, at its root.
	SQLite fs.FS

	core bool // only Core() writes canonlog_migrations
}

// Core returns canonlog's own migration set: the event_log table.
func Core() Set {
	return Set{Postgres: mustSub(coreFiles, "postgres"), SQLite: mustSub(coreFiles, "sqlite"), core: true}
}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // the embedded folders are fixed at compile time
	}
	return sub
}

var setNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Table returns the goose version table the set records its history in.
func (s Set) Table() string {
	if s.core {
		return CoreTable
	}
	return CoreTable + "_" + s.Name
}

func (s Set) label() string {
	if s.core {
		return "core"
	}
	return s.Name
}

// Result is one migration applied or rolled back.
type Result struct {
	Set       string // "core" or the projection's name
	Version   int64
	Source    string // file name, e.g. 00001_event_log.sql
	Direction string // "up" or "down"
	Duration  time.Duration
}

// MigrationStatus says whether one migration of a set is applied.
type MigrationStatus struct {
	Set       string
	Version   int64
	Source    string
	Applied   bool
	AppliedAt time.Time // zero when not applied
}

// Migrator runs one set's migrations against one database.
type Migrator struct {
	set      Set
	provider *goose.Provider
	db       *sql.DB
	dialect  eventlog.Backend
}

// New returns a Migrator for set on db. It never closes db.
func New(db *sqlx.DB, set Set) (*Migrator, error) {
	if !set.core && !setNameRE.MatchString(set.Name) {
		return nil, fmt.Errorf("migrations: set name %q must match %s (only Core() has no name)", set.Name, setNameRE)
	}
	d, err := eventlog.BackendOf(db)
	if err != nil {
		return nil, err
	}
	var (
		fsys         fs.FS
		gooseDialect goose.Dialect
		opts         = []goose.ProviderOption{
			goose.WithTableName(set.Table()),
			goose.WithDisableGlobalRegistry(true),
			goose.WithLogger(goose.NopLogger()),
		}
	)
	switch d {
	case eventlog.Postgres:
		fsys, gooseDialect = set.Postgres, goose.DialectPostgres
		opts = append(opts, goose.WithSessionLocker(&pgLocker{key: set.Table()}))
	case eventlog.SQLite:
		fsys, gooseDialect = set.SQLite, goose.DialectSQLite3
	}
	if fsys == nil {
		return nil, fmt.Errorf("migrations: set %s has no %s migrations", set.label(), d)
	}
	p, err := goose.NewProvider(gooseDialect, db.DB, fsys, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrations: set %s: %w", set.label(), err)
	}
	return &Migrator{set: set, provider: p, db: db.DB, dialect: d}, nil
}

// lock serializes a run of this Migrator with every other migration run on
// the same database, of any set, in this process or another. On PostgreSQL
// goose takes the lock itself (pgLocker), per set; on a SQLite file it is
// one lock per file (lockSQLite), held around everything goose does,
// including creating the version table.
func (m *Migrator) lock(ctx context.Context) (unlock func(), err error) {
	if m.dialect != eventlog.SQLite {
		return func() {}, nil
	}
	return lockSQLite(ctx, m.db)
}

// Up applies every pending migration of the set.
func (m *Migrator) Up(ctx context.Context) ([]Result, error) {
	unlock, err := m.lock(ctx)
	if err != nil {
		return nil, m.wrap("up", err)
	}
	defer unlock()
	// goose's Up first checks for pending migrations without its own lock
	// (pgLocker), creating the version table there; concurrent first runs
	// then collide and goose retries after a fixed one-second sleep.
	// Reading the version first creates the table under the lock. (The
	// SQLite lock is held already.)
	if _, err := m.provider.GetDBVersion(ctx); err != nil {
		return nil, m.wrap("up", err)
	}
	res, err := m.provider.Up(ctx)
	return m.results(res), m.wrap("up", err)
}

// Down rolls back the most recent applied migration of the set. It returns
// a nil Result when nothing is applied.
func (m *Migrator) Down(ctx context.Context) (*Result, error) {
	unlock, err := m.lock(ctx)
	if err != nil {
		return nil, m.wrap("down", err)
	}
	defer unlock()
	res, err := m.provider.Down(ctx)
	if errors.Is(err, goose.ErrNoNextVersion) {
		return nil, nil
	}
	if err != nil {
		return nil, m.wrap("down", err)
	}
	out := m.results([]*goose.MigrationResult{res})
	return &out[0], nil
}

// DownTo rolls back applied migrations until version is the newest applied
// one; DownTo(ctx, 0) removes the whole set. It looks at this set alone:
// to tear down a whole database use the package's Down, which first makes
// sure no other set depends on what it drops.
func (m *Migrator) DownTo(ctx context.Context, version int64) ([]Result, error) {
	unlock, err := m.lock(ctx)
	if err != nil {
		return nil, m.wrap("down", err)
	}
	defer unlock()
	res, err := m.provider.DownTo(ctx, version)
	return m.results(res), m.wrap("down", err)
}

func (m *Migrator) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("migrations: %s %s: %w", op, m.set.label(), err)
}

func (m *Migrator) results(in []*goose.MigrationResult) []Result {
	out := make([]Result, 0, len(in))
	for _, r := range in {
		if r == nil || r.Source == nil {
			continue
		}
		out = append(out, Result{
			Set:       m.set.label(),
			Version:   r.Source.Version,
			Source:    baseName(r.Source.Path),
			Direction: r.Direction,
			Duration:  r.Duration,
		})
	}
	return out
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// migrators returns a Migrator for core and each of sets, in order; every
// set is validated before anything runs.
func migrators(db *sqlx.DB, sets []Set) ([]*Migrator, error) {
	all := append([]Set{Core()}, sets...)
	out := make([]*Migrator, len(all))
	for i, set := range all {
		m, err := New(db, set)
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

// Up applies canonlog's core migrations and then each of sets, in order.
func Up(ctx context.Context, db *sqlx.DB, sets ...Set) ([]Result, error) {
	ms, err := migrators(db, sets)
	if err != nil {
		return nil, err
	}
	var all []Result
	for _, m := range ms {
		res, err := m.Up(ctx)
		all = append(all, res...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}
