package probefailures

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// Query limits for Store.Failures.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// ErrInvalidQuery is returned by the Store for a malformed query: a missing
// rollout id or a limit out of range.
var ErrInvalidQuery = errors.New("invalid probe_failures query")

// Store answers the compliance gate's questions from the probe_failures
// view. Every query is bounded to one rollout and served by the
// (rollout_id, host_id, control_id) index; results are ordered
// deterministically.
type Store struct {
	db *sqlx.DB
}

// NewStore returns a Store reading from db.
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
	if f.RolloutID == "" {
		return nil, fmt.Errorf("probefailures: %w: RolloutID is required", ErrInvalidQuery)
	}
	switch {
	case f.Limit < 0 || f.Limit > MaxLimit:
		return nil, fmt.Errorf("probefailures: %w: Limit is %d, must be between 0 (default %d) and %d", ErrInvalidQuery, f.Limit, DefaultLimit, MaxLimit)
	case f.Limit == 0:
		f.Limit = DefaultLimit
	}
	conds := []string{"rollout_id = ?"}
	args := []any{f.RolloutID}
	for _, c := range []struct{ col, v string }{{"host_id", f.HostID}, {"control_id", f.ControlID}, {"framework", f.Framework}} {
		if c.v != "" {
			conds, args = append(conds, c.col+" = ?"), append(args, c.v)
		}
	}
	if f.After != nil {
		conds = append(conds, "(host_id, control_id, event_log_seq, framework) > (?, ?, ?, ?)")
		args = append(args, f.After.HostID, f.After.ControlID, f.After.Seq, f.After.Framework)
	}
	query := s.db.Rebind(`SELECT event_log_seq, COALESCE(rollout_id, ''), host_id, probe_name, control_id, framework, observed_at
FROM probe_failures WHERE ` + strings.Join(conds, " AND ") + `
ORDER BY host_id, control_id, event_log_seq, framework LIMIT ?`)
	rows, err := s.db.QueryxContext(ctx, query, append(args, f.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("probefailures: failures: %w", err)
	}
	defer rows.Close()
	out := make([]Row, 0, min(f.Limit, 256))
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

// FailingHosts returns the hosts that failed controlID in a rollout, in
// name order.
func (s *Store) FailingHosts(ctx context.Context, rolloutID, controlID string) ([]string, error) {
	if rolloutID == "" || controlID == "" {
		return nil, fmt.Errorf("probefailures: %w: rollout id and control id are required", ErrInvalidQuery)
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
	if rolloutID == "" {
		return 0, fmt.Errorf("probefailures: %w: rollout id is required", ErrInvalidQuery)
	}
	var n int
	err := s.db.GetContext(ctx, &n, s.db.Rebind(`SELECT COUNT(DISTINCT host_id) FROM probe_failures WHERE rollout_id = ?`), rolloutID)
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
	if rolloutID == "" {
		return nil, fmt.Errorf("probefailures: %w: rollout id is required", ErrInvalidQuery)
	}
	out := []ControlSummary{}
	err := s.db.SelectContext(ctx, &out, s.db.Rebind(`SELECT control_id, framework, COUNT(DISTINCT host_id) AS failing_hosts
FROM probe_failures WHERE rollout_id = ? GROUP BY control_id, framework ORDER BY control_id, framework`), rolloutID)
	if err != nil {
		return nil, fmt.Errorf("probefailures: summary: %w", err)
	}
	return out, nil
}
