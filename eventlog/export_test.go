package eventlog

// WithoutDimensionLocks makes l's appends take no dimension locks, as
// before conditions existed: for the benchmark that measures their cost.
// Conditions are not safe on such a log.
func WithoutDimensionLocks(l *Log) {
	l.dimensionLocks = false
	l.q = queriesFor(l.db, l.backend, false)
}
