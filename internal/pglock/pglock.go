// Package pglock names canonlog's PostgreSQL advisory locks. A lock is
// identified by a name; its key is a hash of the current schema and the
// name, so that logs in different schemas of one database never contend.
package pglock

// KeyExpr returns the SQL expression for the lock key of the name given by
// nameExpr (a placeholder or a column). Every place that takes one of
// canonlog's named locks goes through here, so shared and exclusive
// holders always agree on the key.
func KeyExpr(nameExpr string) string {
	return "hashtextextended(current_schema() || ':' || " + nameExpr + ", 0)"
}

// ProjectionLock returns the lock name of a projection: appends that apply
// to it hold it shared, rebuild and verify hold it exclusively.
func ProjectionLock(projection string) string {
	return "canonlog:projection:" + projection
}

// KeyExprIn is KeyExpr for the schema given by schemaExpr instead of the
// current one: for a session whose search path puts another schema
// first, such as an online rebuild's.
func KeyExprIn(schemaExpr, nameExpr string) string {
	return "hashtextextended(" + schemaExpr + " || ':' || " + nameExpr + ", 0)"
}

// AppendLockPrefix begins the name of the lock on one dimension value of
// appended events (see AppendLock). The single-row insert builds the same
// names in SQL from its parameters, so this string is the contract
// between the two.
const AppendLockPrefix = "canonlog:append:"

// AppendLock returns the name of the lock an append of an event with the
// given value of dimension dim ("kind", "host" or "rollout") holds
// shared, and that a conditional append or a read for one holds
// exclusively when its condition selects that value.
func AppendLock(dim, value string) string {
	return AppendLockPrefix + dim + ":" + value
}

// AppendWideLock returns the name of the lock that stands for every value
// of dimension dim: an append touching too many values of it to lock one
// by one holds it exclusively instead, and every conditional append on
// that dimension holds it shared.
func AppendWideLock(dim string) string {
	return "canonlog:append-all:" + dim
}
