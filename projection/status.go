package projection

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtime"
)

// Status describes one registered projection against its checkpoint.
type Status struct {
	Name string
	// Version is the registered (current code's) version.
	Version int
	// BuiltVersion is the version the live view was built at; 0 when it
	// was never built.
	BuiltVersion int
	// BuiltSeq is the log's last seq when the view was last rebuilt (or
	// installed on a log without events of its kinds).
	BuiltSeq int64
	// BuiltAt is when that happened, by the log's clock.
	BuiltAt time.Time
	// Stale reports that the view was built by other logic (BuiltVersion !=
	// Version) or never built: it needs a rebuild before it can be trusted.
	Stale bool
}

type checkpoint struct {
	Version int
	Seq     int64
	At      time.Time
}

func readCheckpoints(ctx context.Context, q sqlx.QueryerContext) (map[string]checkpoint, error) {
	rows, err := q.QueryxContext(ctx, `SELECT name, version, built_seq, built_at FROM canonlog_projections`)
	if err != nil {
		return nil, fmt.Errorf("projection: read checkpoints: %w", err)
	}
	defer rows.Close()
	out := make(map[string]checkpoint)
	for rows.Next() {
		var (
			name string
			c    checkpoint
		)
		if err := rows.Scan(&name, &c.Version, &c.Seq, dbtime.Dest{T: &c.At}); err != nil {
			return nil, fmt.Errorf("projection: read checkpoints: %w", err)
		}
		out[name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projection: read checkpoints: %w", err)
	}
	return out, nil
}

func writeCheckpoint(ctx context.Context, tx *sqlx.Tx, name string, c checkpoint) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO canonlog_projections (name, version, built_seq, built_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET version = excluded.version, built_seq = excluded.built_seq, built_at = excluded.built_at`),
		name, c.Version, c.Seq, dbtime.Format(c.At))
	if err != nil {
		return fmt.Errorf("projection %s: write checkpoint: %w", name, err)
	}
	return nil
}

// ReadStatus reports every registered projection's status, in name order.
func ReadStatus(ctx context.Context, log *eventlog.Log, reg *Registry) ([]Status, error) {
	cps, err := readCheckpoints(ctx, log.DB())
	if err != nil {
		return nil, err
	}
	entries, _ := reg.selectEntries(nil)
	out := make([]Status, len(entries))
	for i, e := range entries {
		s := Status{Name: e.name, Version: e.p.Version()}
		if c, ok := cps[e.name]; ok {
			s.BuiltVersion, s.BuiltSeq, s.BuiltAt = c.Version, c.Seq, c.At
		}
		s.Stale = s.BuiltVersion != s.Version
		out[i] = s
	}
	return out, nil
}

// StalePolicy says what CheckStale does about stale projections.
type StalePolicy int

const (
	// StaleRefuse fails with a *StaleError naming them. The default.
	StaleRefuse StalePolicy = iota
	// StaleRebuild rebuilds them.
	StaleRebuild
	// StaleIgnore reports them and carries on.
	StaleIgnore
)

func (p StalePolicy) String() string {
	switch p {
	case StaleRefuse:
		return "refuse"
	case StaleRebuild:
		return "rebuild"
	case StaleIgnore:
		return "ignore"
	}
	return fmt.Sprintf("StalePolicy(%d)", int(p))
}

// ParseStalePolicy parses "refuse", "rebuild" or "ignore".
func ParseStalePolicy(s string) (StalePolicy, error) {
	for _, p := range []StalePolicy{StaleRefuse, StaleRebuild, StaleIgnore} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("projection: stale policy %q: use refuse, rebuild or ignore", s)
}

// CheckStale is the start-up check that keeps a service from serving a view
// built by older logic without saying so. It returns the status of every
// registered projection after applying policy to the stale ones.
func CheckStale(ctx context.Context, log *eventlog.Log, reg *Registry, policy StalePolicy) ([]Status, error) {
	sts, err := ReadStatus(ctx, log, reg)
	if err != nil {
		return nil, err
	}
	var stale []Status
	for _, s := range sts {
		if s.Stale {
			stale = append(stale, s)
		}
	}
	if len(stale) == 0 {
		return sts, nil
	}
	switch policy {
	case StaleRefuse:
		return sts, &StaleError{Stale: stale}
	case StaleRebuild:
		if _, err := Rebuild(ctx, log, reg, &RebuildOptions{StaleOnly: true}); err != nil {
			return sts, err
		}
		return ReadStatus(ctx, log, reg)
	case StaleIgnore:
		return sts, nil
	default:
		return sts, fmt.Errorf("projection: unknown stale policy %d", int(policy))
	}
}
