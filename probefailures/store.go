package probefailures

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/canonlog/canonlog/eventlog"
)

// Query limits for Store.Failures.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// ErrInvalidQuery is returned by the Store's methods (Gate included) for a
// malformed query: a missing rollout id, an id holding a NUL byte, or a
// limit out of range.
var ErrInvalidQuery = errors.New("invalid probe_failures query")

// Store answers the compliance gate's questions from the probe_failures
// view. Every query is bounded to one rollout and served by the
// (rollout_id, host_id, control_id, event_log_seq, framework) index;
// results are ordered deterministically.
type Store struct {
	db *sqlx.DB
}

// NewStore returns a Store reading from db, opened on PostgreSQL or
// SQLite (see eventlog.OpenDB).
func NewStore(db *sqlx.DB) *Store { return &Store{db: db} }

// FailureFilter selects failures of one rollout.
type FailureFilter struct {
	// RolloutID is required.
	RolloutID string
	// HostID, ControlID and Framework narrow the result when set.
	HostID, ControlID, Framework string
	// After continues a listing after the given failure (the last of the
	// previous page); nil starts at the beginning.
	After *Row
	// Limit is the page size: 0 means DefaultLimit; at most MaxLimit.
	Limit int
}

// Failures lists the failures of a rollout ordered by host, control,
// event seq and framework, a page at a time: pass the last row of a page
// as After to get the next.
func (s *Store) Failures(ctx context.Context, f FailureFilter) ([]Row, error) {
	backend, err := eventlog.BackendOf(s.db)
	if err != nil {
		return nil, fmt.Errorf("probefailures: failures: %w", err)
	}
	query, args, err := s.failuresQuery(f, backend)
	if err != nil {
		return nil, err
	}
	return scanFailures(s.db.QueryxContext(ctx, query, args...))
}

// failuresQuery checks f and returns the query Failures runs on backend.
//
// On PostgreSQL the query first turns off every plan but the ordered walk
// of the index. Left to the planner, a table without statistics (after a
// bulk load, a rebuild or a restore, or wherever autovacuum lags or is
// off) estimates a rollout at 0.5% of the table; for a page larger than
// that it reads the rest of the rollout and sorts it, on every page, so
// that listing a rollout costs the square of its size. The settings are
// SET LOCAL in the same query string, which PostgreSQL runs as one
// implicit transaction: they end with it, and the page costs one round
// trip. That string is sent without parameters (a query with parameters
// may hold one statement), so the values are quoted into it.
//
// The page index is (rollout_id, host_id, control_id, event_log_seq,
// framework). The filter's host, and its control when the host is set, pin
// a prefix of it by equality, and the cursor then compares only the
// columns after that prefix, so that a page starts at the cursor's own
// index entry. A cursor on another host or control than the filter's
// (not one a page returned) keeps the comparison of all four columns: it
// is right under any collation. On SQLite a pinned column outside the
// prefix is written +column, which keeps its planner from taking it for an
// index term and then sorting the page.
func (s *Store) failuresQuery(f FailureFilter, backend eventlog.Backend) (string, []any, error) {
	if f.RolloutID == "" {
		return "", nil, fmt.Errorf("probefailures: %w: RolloutID is required", ErrInvalidQuery)
	}
	if err := checkNUL(queryArg{"RolloutID", f.RolloutID}, queryArg{"HostID", f.HostID}, queryArg{"ControlID", f.ControlID}, queryArg{"Framework", f.Framework}); err != nil {
		return "", nil, err
	}
	if a := f.After; a != nil {
		if err := checkNUL(queryArg{"After.HostID", a.HostID}, queryArg{"After.ControlID", a.ControlID}, queryArg{"After.Framework", a.Framework}); err != nil {
			return "", nil, err
		}
	}
	switch {
	case f.Limit < 0 || f.Limit > MaxLimit:
		return "", nil, fmt.Errorf("probefailures: %w: Limit is %d, must be between 0 (default %d) and %d", ErrInvalidQuery, f.Limit, DefaultLimit, MaxLimit)
	case f.Limit == 0:
		f.Limit = DefaultLimit
	}
	filterOnly := ""
	if backend == eventlog.SQLite {
		filterOnly = "+"
	}
	conds := []string{"rollout_id = ?"}
	args := []any{f.RolloutID}
	pinned := 0 // leading cursor columns fixed by equality
	switch {
	case f.HostID != "" && f.ControlID != "":
		conds, args, pinned = append(conds, "host_id = ?", "control_id = ?"), append(args, f.HostID, f.ControlID), 2
	case f.HostID != "":
		conds, args, pinned = append(conds, "host_id = ?"), append(args, f.HostID), 1
	case f.ControlID != "":
		conds, args = append(conds, filterOnly+"control_id = ?"), append(args, f.ControlID)
	}
	if f.Framework != "" {
		conds, args = append(conds, filterOnly+"framework = ?"), append(args, f.Framework)
	}
	if a := f.After; a != nil {
		cols := []string{"host_id", "control_id", "event_log_seq", "framework"}
		vals := []any{a.HostID, a.ControlID, a.Seq, a.Framework}
		if (pinned >= 1 && a.HostID != f.HostID) || (pinned == 2 && a.ControlID != f.ControlID) {
			pinned = 0
		}
		conds = append(conds, "("+strings.Join(cols[pinned:], ", ")+") > ("+strings.Repeat("?, ", len(cols)-pinned-1)+"?)")
		args = append(args, vals[pinned:]...)
	}
	query := `SELECT event_log_seq, COALESCE(rollout_id, ''), host_id, probe_name, control_id, framework, observed_at
FROM probe_failures WHERE ` + strings.Join(conds, " AND ") + `
ORDER BY host_id, control_id, event_log_seq, framework LIMIT ?`
	args = append(args, f.Limit)
	if backend == eventlog.SQLite {
		return query, args, nil
	}
	var b strings.Builder
	b.WriteString(pageScanOnly)
	for i, part := range strings.Split(query, "?") {
		if i > 0 {
			switch v := args[i-1].(type) {
			case string:
				b.WriteString(pq.QuoteLiteral(v))
			case int64:
				b.WriteString(strconv.FormatInt(v, 10))
			case int:
				b.WriteString(strconv.Itoa(v))
			default:
				panic(fmt.Sprintf("probefailures: a %T in a page query", v))
			}
		}
		b.WriteString(part)
	}
	return b.String(), nil, nil
}

// pageScanOnly leaves a page query on PostgreSQL one plan: an index scan
// in index order.
const pageScanOnly = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off;\n"

// scanFailures reads the rows of a Failures query.
func scanFailures(rows *sqlx.Rows, err error) ([]Row, error) {
	if err != nil {
		return nil, fmt.Errorf("probefailures: failures: %w", err)
	}
	defer rows.Close()
	out := []Row{}
	for rows.Next() {
		var r Row
		if err := rows.Scan(&r.Seq, &r.RolloutID, &r.HostID, &r.ProbeName, &r.ControlID, &r.Framework, eventlog.ScanTime(&r.ObservedAt)); err != nil {
			return nil, fmt.Errorf("probefailures: failures: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("probefailures: failures: %w", err)
	}
	return out, nil
}

// queryArg is a query argument checkNUL checks, by the name its error gives it.
type queryArg struct{ name, value string }

// checkNUL refuses an id holding a NUL byte, which no stored id holds
// and PostgreSQL text cannot carry.
func checkNUL(args ...queryArg) error {
	for _, a := range args {
		if strings.IndexByte(a.value, 0) >= 0 {
			return fmt.Errorf("probefailures: %w: %s holds a NUL byte", ErrInvalidQuery, a.name)
		}
	}
	return nil
}

// checkRollout checks the rollout id of a query bounded to one rollout.
func checkRollout(rolloutID string) error {
	if rolloutID == "" {
		return fmt.Errorf("probefailures: %w: rollout id is required", ErrInvalidQuery)
	}
	return checkNUL(queryArg{"rollout id", rolloutID})
}

// queryer is what the rollout queries run on: the Store's pool, or the
// transaction of a consistent reading (Store.Gate).
type queryer interface {
	sqlx.QueryerContext
	Rebind(query string) string
}

var (
	_ queryer = (*sqlx.DB)(nil)
	_ queryer = (*sqlx.Tx)(nil)
)

// FailingHosts returns the hosts that failed controlID in a rollout, in
// name order.
func (s *Store) FailingHosts(ctx context.Context, rolloutID, controlID string) ([]string, error) {
	if rolloutID == "" || controlID == "" {
		return nil, fmt.Errorf("probefailures: %w: rollout id and control id are required", ErrInvalidQuery)
	}
	if err := checkNUL(queryArg{"rollout id", rolloutID}, queryArg{"control id", controlID}); err != nil {
		return nil, err
	}
	hosts := []string{}
	err := s.db.SelectContext(ctx, &hosts, s.db.Rebind(`SELECT DISTINCT host_id FROM probe_failures
WHERE rollout_id = ? AND control_id = ? ORDER BY host_id`), rolloutID, controlID)
	if err != nil {
		return nil, fmt.Errorf("probefailures: failing hosts: %w", err)
	}
	return hosts, nil
}

// CountFailingHosts returns the number of distinct hosts with at least one
// failure in a rollout.
func (s *Store) CountFailingHosts(ctx context.Context, rolloutID string) (int, error) {
	if err := checkRollout(rolloutID); err != nil {
		return 0, err
	}
	return countFailingHosts(ctx, s.db, rolloutID)
}

func countFailingHosts(ctx context.Context, q queryer, rolloutID string) (int, error) {
	var n int
	err := sqlx.GetContext(ctx, q, &n, q.Rebind(`SELECT COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = ?`), rolloutID)
	if err != nil {
		return 0, fmt.Errorf("probefailures: count failing hosts: %w", err)
	}
	return n, nil
}

// ControlSummary is one control's failures in a rollout.
type ControlSummary struct {
	ControlID    string `db:"control_id"`
	Framework    string `db:"framework"`
	FailingHosts int    `db:"failing_hosts"`
}

// Summary returns, per failing control of a rollout, its framework and the
// number of distinct hosts failing it, ordered by control and framework.
func (s *Store) Summary(ctx context.Context, rolloutID string) ([]ControlSummary, error) {
	if err := checkRollout(rolloutID); err != nil {
		return nil, err
	}
	return summary(ctx, s.db, rolloutID)
}

func summary(ctx context.Context, q queryer, rolloutID string) ([]ControlSummary, error) {
	out := []ControlSummary{}
	err := sqlx.SelectContext(ctx, q, &out, q.Rebind(`SELECT control_id, framework, COUNT(DISTINCT host_id) AS failing_hosts
FROM probe_failures WHERE rollout_id = ? GROUP BY control_id, framework ORDER BY control_id, framework`), rolloutID)
	if err != nil {
		return nil, fmt.Errorf("probefailures: summary: %w", err)
	}
	return out, nil
}
