// Package dialect keeps the differences between canonlog's two storage
// backends, PostgreSQL (lib/pq) and SQLite (modernc.org/sqlite), in one place.
package dialect

import (
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Dialect names a storage backend.
type Dialect int

const (
	// Postgres is PostgreSQL through github.com/lib/pq (driver name "postgres").
	Postgres Dialect = iota + 1
	// SQLite is SQLite through modernc.org/sqlite (driver name "sqlite").
	SQLite
)

// Driver names as registered by the database/sql drivers canonlog uses.
const (
	DriverPostgres = "postgres"
	DriverSQLite   = "sqlite"
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	default:
		return fmt.Sprintf("dialect(%d)", int(d))
	}
}

// Of returns the dialect of db, judged by the driver name it was opened with.
func Of(db *sqlx.DB) (Dialect, error) {
	if db == nil {
		return 0, fmt.Errorf("canonlog: nil *sqlx.DB")
	}
	return ForDriver(db.DriverName())
}

// ForDriver maps a database/sql driver name to a dialect.
func ForDriver(name string) (Dialect, error) {
	switch name {
	case DriverPostgres:
		return Postgres, nil
	case DriverSQLite:
		return SQLite, nil
	default:
		return 0, fmt.Errorf("canonlog: unsupported database driver %q: open the database with eventlog.OpenDB, or with sqlx.Open(%q, …) from github.com/lib/pq or sqlx.Open(%q, …) from modernc.org/sqlite", name, DriverPostgres, DriverSQLite)
	}
}
