// Package dialect names canonlog's two storage backends for the internal
// packages that still use its names. The logic lives in package eventlog
// (Backend, BackendOf), which projections outside this module can import;
// Dialect is the same type, so values pass between the two unconverted.
// New code uses eventlog's names.
package dialect

import (
	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// Dialect names a storage backend: it is eventlog.Backend.
type Dialect = eventlog.Backend

const (
	// Postgres is eventlog.Postgres.
	Postgres = eventlog.Postgres
	// SQLite is eventlog.SQLite.
	SQLite = eventlog.SQLite
)

// Driver names as registered by the database/sql drivers canonlog uses:
// github.com/lib/pq and modernc.org/sqlite. eventlog.BackendOf maps them.
const (
	DriverPostgres = "postgres"
	DriverSQLite   = "sqlite"
)

// Of returns the dialect of db, judged by the driver name it was opened with.
func Of(db *sqlx.DB) (Dialect, error) { return eventlog.BackendOf(db) }

// ForDriver maps a database/sql driver name to a dialect.
func ForDriver(name string) (Dialect, error) { return eventlog.BackendOf(driverName(name)) }

// driverName lets BackendOf read a bare driver name.
type driverName string

func (n driverName) DriverName() string { return string(n) }
