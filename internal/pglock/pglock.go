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
