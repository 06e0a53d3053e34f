package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing/fstest"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

// hostSeen is the application projection of these tests: the last status
// each host reported, an upsert guarded by seq. Its derivation depends on
// its version (version 2 prefixes the status with "v2:") so that a test
// can tell a rebuilt row from a stale one. A payload with "poison": true
// makes Apply fail.
type hostSeen struct{ version int }

var errPoison = errors.New("poisoned status report")

func (h hostSeen) Name() string { return "host_seen" }
func (h hostSeen) Version() int {
	if h.version == 0 {
		return 1
	}
	return h.version
}
func (hostSeen) Kinds() []eventlog.Kind { return []eventlog.Kind{eventlog.KindAgentEvent} }
func (hostSeen) Tables() []string       { return []string{"host_seen"} }
func (hostSeen) Migrations() migrations.Set {
	return migrations.Set{Postgres: hostSeenSQL, SQLite: hostSeenSQL}
}

func (hostSeen) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM host_seen`)
	return err
}

func (h hostSeen) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	var p struct {
		Status string `json:"status"`
		Poison bool   `json:"poison"`
	}
	if err := json.Unmarshal(ev.Payload, &p); err != nil || ev.HostID == "" {
		return nil // not a status report
	}
	if p.Poison {
		return errPoison
	}
	if h.Version() >= 2 {
		p.Status = "v2:" + p.Status
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`
INSERT INTO host_seen (host_id, status, event_log_seq) VALUES (?, ?, ?)
ON CONFLICT (host_id) DO UPDATE SET status = excluded.status, event_log_seq = excluded.event_log_seq
WHERE excluded.event_log_seq > host_seen.event_log_seq`), ev.HostID, p.Status, ev.Seq)
	return err
}

// ApplyBatch touches hosts in name order so that concurrent batches cannot
// deadlock on PostgreSQL (see projection/example_test.go).
func (h hostSeen) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	sorted := slices.Clone(events)
	slices.SortStableFunc(sorted, func(a, b eventlog.Event) int { return strings.Compare(a.HostID, b.HostID) })
	for _, ev := range sorted {
		if err := h.Apply(ctx, tx, ev); err != nil {
			return projection.EventError(ev.Seq, err)
		}
	}
	return nil
}

var hostSeenSQL = fstest.MapFS{"00001_host_seen.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE host_seen (
    host_id       TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    event_log_seq BIGINT NOT NULL REFERENCES event_log (seq)
);
-- +goose Down
DROP TABLE host_seen;
`)}}

var (
	_ projection.KindFilter   = hostSeen{}
	_ projection.BatchApplier = hostSeen{}
	_ projection.Migrator     = hostSeen{}
	_ projection.Tabler       = hostSeen{}
)

// hostSeenRows returns host_seen as "host=status" strings in host order.
func hostSeenRows(ctx context.Context, db *sqlx.DB) ([]string, error) {
	var rows []struct {
		Host   string `db:"host_id"`
		Status string `db:"status"`
	}
	if err := db.SelectContext(ctx, &rows, `SELECT host_id, status FROM host_seen ORDER BY host_id`); err != nil {
		return nil, err
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Host + "=" + r.Status
	}
	return out, nil
}

func statusReport(host, status, eventID string) eventlog.Entry {
	return eventlog.Entry{
		Kind:    eventlog.KindAgentEvent,
		HostID:  host,
		EventID: eventID,
		Payload: json.RawMessage(`{"type":"Status","status":"` + status + `"}`),
	}
}
