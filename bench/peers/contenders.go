package peers

// The contenders, in the order of the report's columns.
const (
	Raw       = "raw lib/pq"
	Canonlog  = "canonlog"
	Hallgren  = "hallgren/eventsourcing"
	Watermill = "watermill-sql"
)

// HallgrenUnavailable says why the hallgren/eventsourcing column stays
// empty. Its SQL event store is the module
// github.com/hallgren/eventsourcing/eventstore/sql, and the Go module
// proxy this program is built from serves only its v0.4.0: the version
// list and v0.4.1, v0.4.2 and v0.5.2 answer 403 "This module version is
// not available". v0.4.0 has no PostgreSQL store (NewPostgres came
// later): its one SQL store, sql.Open(db), is written for SQLite
// (AUTOINCREMENT in the DDL of its Migrate, "?" placeholders in Save's
// SELECT, Result.LastInsertId, which lib/pq does not support), and
// against PostgreSQL through lib/pq its Migrate and its Save both fail
// with a syntax error.
const HallgrenUnavailable = "github.com/hallgren/eventsourcing/eventstore/sql: the module proxy serves only v0.4.0, " +
	"which has no PostgreSQL store (its one SQL store is written for SQLite: Migrate and Save end in syntax errors on PostgreSQL); " +
	"later versions (v0.4.1, v0.4.2, v0.5.2 tried) and the version list answer 403"

// contender is one column of the report.
type contender struct {
	name string
	// module is the Go module whose version the report names.
	module string
	// unavailable, when set, says why the contender is not measured.
	unavailable string
	newStore    func() store
}

var contenders = []contender{
	{name: Raw, module: "github.com/lib/pq", newStore: func() store { return &rawStore{} }},
	{name: Canonlog, module: "github.com/canonlog/canonlog", newStore: func() store { return &canonlogStore{} }},
	{name: Hallgren, module: "github.com/hallgren/eventsourcing/eventstore/sql", unavailable: HallgrenUnavailable},
	{name: Watermill, module: "github.com/ThreeDotsLabs/watermill-sql/v4", newStore: func() store { return &watermillStore{} }},
}
