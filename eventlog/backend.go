package eventlog

import (
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Backend names the database a log is stored in. canonlog runs the same
// code on both; a projection whose SQL must differ between them (arrays
// and COPY on PostgreSQL, a prepared statement per row on SQLite, an
// upsert's syntax) branches on the backend of the transaction it is given:
//
//	b, err := eventlog.BackendOf(tx)
//	if err != nil { return err }
//	if b == eventlog.Postgres { … } else { … }
type Backend int

const (
	// Postgres is PostgreSQL through github.com/lib/pq (driver name
	// "postgres").
	Postgres Backend = iota + 1
	// SQLite is SQLite through modernc.org/sqlite (driver name "sqlite").
	SQLite
)

// The database/sql driver names of the two backends, as lib/pq and
// modernc.org/sqlite register them.
const (
	driverPostgres = "postgres"
	driverSQLite   = "sqlite"
)

// String returns "postgres" or "sqlite".
func (b Backend) String() string {
	switch b {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	default:
		return fmt.Sprintf("backend(%d)", int(b))
	}
}

// BackendOf returns the backend of db, a *sqlx.DB or *sqlx.Tx (any
// sqlx.ExtContext has the method it reads), judged by the database/sql
// driver name the database was opened with. A database opened with OpenDB
// is always one of the two; any other driver is an error.
func BackendOf(db interface{ DriverName() string }) (Backend, error) {
	switch v := db.(type) {
	case nil:
		return 0, fmt.Errorf("eventlog: backend of a nil database")
	case *sqlx.DB:
		if v == nil {
			return 0, fmt.Errorf("eventlog: backend of a nil *sqlx.DB")
		}
	case *sqlx.Tx:
		if v == nil {
			return 0, fmt.Errorf("eventlog: backend of a nil *sqlx.Tx")
		}
	}
	switch name := db.DriverName(); name {
	case driverPostgres:
		return Postgres, nil
	case driverSQLite:
		return SQLite, nil
	default:
		return 0, fmt.Errorf("eventlog: unsupported database driver %q: open the database with eventlog.OpenDB, or with sqlx.Open(%q, …) from github.com/lib/pq or sqlx.Open(%q, …) from modernc.org/sqlite",
			name, driverPostgres, driverSQLite)
	}
}
