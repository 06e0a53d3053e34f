package probefailures

import "github.com/canonlog/canonlog/eventlog"

// FailuresQuery returns the query and arguments Store.Failures runs for f.
func FailuresQuery(s *Store, f FailureFilter) (string, []any, error) {
	backend, err := eventlog.BackendOf(s.db)
	if err != nil {
		return "", nil, err
	}
	return s.failuresQuery(f, backend)
}
