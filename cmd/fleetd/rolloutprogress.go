package main

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFiles embed.FS

// rolloutProgress is fleetd's own projection: per rollout and host, the
// last agent event received (its payload type and status, and when). It
// is an upsert, so it is guarded by seq: concurrent appends may commit out
// of seq order on PostgreSQL, and an older event must never overwrite a
// newer one, or the live view would differ from a rebuild.
type rolloutProgress struct{}

// Bump rolloutProgressVersion whenever Apply derives different rows from
// the same events; fleetd then refuses to start until the view is rebuilt
// (fleetd rebuild rollout_progress, or CANONLOG_STALE_POLICY=rebuild).
const rolloutProgressVersion = 1

var (
	_ projection.Projection   = rolloutProgress{}
	_ projection.KindFilter   = rolloutProgress{}
	_ projection.BatchApplier = rolloutProgress{}
	_ projection.Migrator     = rolloutProgress{}
	_ projection.Tabler       = rolloutProgress{}
)

func newRolloutProgress() rolloutProgress { return rolloutProgress{} }

func (rolloutProgress) Name() string           { return "rollout_progress" }
func (rolloutProgress) Version() int           { return rolloutProgressVersion }
func (rolloutProgress) Kinds() []eventlog.Kind { return []eventlog.Kind{eventlog.KindAgentEvent} }
func (rolloutProgress) Tables() []string       { return []string{"rollout_progress"} }

func (rolloutProgress) Migrations() migrations.Set {
	pg, _ := fs.Sub(migrationFiles, "migrations/postgres")
	lite, _ := fs.Sub(migrationFiles, "migrations/sqlite")
	return migrations.Set{Postgres: pg, SQLite: lite}
}

func (rolloutProgress) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM rollout_progress`)
	return err
}

// Apply records ev as the last event of its rollout and host, unless a
// newer one (higher seq) is already recorded. Events without a rollout or
// a host say nothing about a rollout's progress.
func (rolloutProgress) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	if ev.RolloutID == "" || ev.HostID == "" {
		return nil
	}
	typ, status := typeAndStatus(ev.Payload)
	_, err := tx.ExecContext(ctx, tx.Rebind(`
INSERT INTO rollout_progress (rollout_id, host_id, last_type, last_status, last_seen_at, event_log_seq)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (rollout_id, host_id) DO UPDATE SET
    last_type = excluded.last_type, last_status = excluded.last_status,
    last_seen_at = excluded.last_seen_at, event_log_seq = excluded.event_log_seq
WHERE excluded.event_log_seq > rollout_progress.event_log_seq`),
		ev.RolloutID, ev.HostID, typ, status, eventlog.FormatTime(ev.TS), ev.Seq)
	return err
}

// ApplyBatch applies events in (rollout, host) order, each key's events
// still in seq order. Two concurrent batches then lock the rows they
// upsert in the same order and cannot deadlock each other on PostgreSQL,
// as they could if each followed its own event order.
func (p rolloutProgress) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	sorted := slices.Clone(events)
	slices.SortStableFunc(sorted, func(a, b eventlog.Event) int {
		return cmp.Or(cmp.Compare(a.RolloutID, b.RolloutID), cmp.Compare(a.HostID, b.HostID))
	})
	for _, ev := range sorted {
		if err := p.Apply(ctx, tx, ev); err != nil {
			return projection.EventError(ev.Seq, err)
		}
	}
	return nil
}

// typeAndStatus reads the payload's "type" and "status" when they are
// strings. Any other payload is still an event from the host: it counts
// with empty type and status rather than failing the append.
func typeAndStatus(payload json.RawMessage) (typ, status string) {
	var p struct {
		Type, Status any
	}
	if json.Unmarshal(payload, &p) != nil {
		return "", ""
	}
	typ, _ = p.Type.(string)
	status, _ = p.Status.(string)
	return typ, status
}

// HostProgress is one host's last event in a rollout.
type HostProgress struct {
	HostID     string    `json:"host_id"`
	LastType   string    `json:"last_type"`
	LastStatus string    `json:"last_status"`
	LastSeenAt time.Time `json:"last_seen_at"`
	Seq        int64     `json:"seq"`
}

// Limits of progressStore.Hosts.
const (
	defaultHostsLimit = 500
	maxHostsLimit     = 5000
)

var errInvalidQuery = errors.New("invalid query")

// progressStore reads rollout_progress.
type progressStore struct{ db *sqlx.DB }

// newProgressStore takes the log only to be built after it, so that its
// users start after the migrations ran.
func newProgressStore(db *sqlx.DB, _ *eventlog.Log) *progressStore { return &progressStore{db: db} }

// Hosts lists the hosts of a rollout in name order, limit at a time, after
// the host named after ("" for the first page). Served by the primary key.
func (s *progressStore) Hosts(ctx context.Context, rolloutID, after string, limit int) ([]HostProgress, error) {
	switch {
	case rolloutID == "":
		return nil, fmt.Errorf("%w: rollout id is required", errInvalidQuery)
	case limit < 0 || limit > maxHostsLimit:
		return nil, fmt.Errorf("%w: limit is %d, must be between 1 and %d", errInvalidQuery, limit, maxHostsLimit)
	case limit == 0:
		limit = defaultHostsLimit
	}
	rows, err := s.db.QueryxContext(ctx, s.db.Rebind(`
SELECT host_id, last_type, last_status, last_seen_at, event_log_seq FROM rollout_progress
WHERE rollout_id = ? AND host_id > ? ORDER BY host_id LIMIT ?`), rolloutID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("rollout progress: %w", err)
	}
	defer rows.Close()
	out := []HostProgress{}
	for rows.Next() {
		var h HostProgress
		if err := rows.Scan(&h.HostID, &h.LastType, &h.LastStatus, eventlog.ScanTime(&h.LastSeenAt), &h.Seq); err != nil {
			return nil, fmt.Errorf("rollout progress: %w", err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rollout progress: %w", err)
	}
	return out, nil
}
