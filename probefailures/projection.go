package probefailures

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

// Name is the projection's name, in checkpoints and on the command line.
const Name = "probe_failures"

// Version is the version of the derivation rules. Bump it whenever Rows
// derives different rows from the same events.
const Version = 1

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFiles embed.FS

// Projection derives probe_failures. It is stateless and safe for
// concurrent use; register one per registry.
type Projection struct{}

// New returns the probe_failures projection.
func New() *Projection { return &Projection{} }

var (
	_ projection.Projection    = (*Projection)(nil)
	_ projection.KindFilter    = (*Projection)(nil)
	_ projection.PayloadMarker = (*Projection)(nil)
	_ projection.Pipeliner     = (*Projection)(nil)
	_ projection.Migrator      = (*Projection)(nil)
	_ projection.Tabler        = (*Projection)(nil)
	_ projection.Checksummer   = (*Projection)(nil)
)

// Name implements projection.Projection.
func (*Projection) Name() string { return Name }

// Version implements projection.Projection.
func (*Projection) Version() int { return Version }

// Kinds implements projection.KindFilter: only agent events carry probe
// results.
func (*Projection) Kinds() []eventlog.Kind { return []eventlog.Kind{eventlog.KindAgentEvent} }

// PayloadMarkers implements projection.PayloadMarker. A row needs a probe
// result and a sub-result whose status is the JSON string "fail": written
// without escapes, that is the bytes "fail" with their quotes; written
// with escapes, the payload holds a \u (no other escape yields a letter
// of it). Rebuilds and verifies therefore read only the agent events that
// hold one of the two — about a quarter of a fleet's, where most probes
// pass — and never ship or decode the rest, which derive nothing. They
// are not validated on those paths either: a malformed probe result
// without a failure is refused when it is appended, not by a rebuild.
func (*Projection) PayloadMarkers() []string { return []string{`"fail"`, `\u`} }

// Tables implements projection.Tabler.
func (*Projection) Tables() []string { return []string{"probe_failures"} }

// Migrations implements projection.Migrator.
func (*Projection) Migrations() migrations.Set {
	pg, _ := fs.Sub(migrationFiles, "migrations/postgres")
	lite, _ := fs.Sub(migrationFiles, "migrations/sqlite")
	return migrations.Set{Postgres: pg, SQLite: lite}
}

// Apply implements projection.Projection.
func (p *Projection) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	return p.ApplyBatch(ctx, tx, []eventlog.Event{ev})
}

// ApplyBatch implements projection.BatchApplier: it decodes every event
// first (so a malformed probe result refuses the batch before anything is
// written) and inserts all rows with one statement on PostgreSQL.
func (p *Projection) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	rows, err := p.PrepareBatch(events)
	if err != nil {
		return err
	}
	return rows.WriteTx(ctx, tx)
}

// PrepareBatch implements projection.Pipeliner: it derives the rows of
// events without touching the database.
func (*Projection) PrepareBatch(events []eventlog.Event) (projection.PreparedBatch, error) {
	var rows preparedRows
	for _, ev := range events {
		var err error
		if rows, err = Rows(rows, ev); err != nil {
			return nil, projection.EventError(ev.Seq, err)
		}
	}
	return rows, nil
}

// preparedRows are the rows PrepareBatch derived, ready to insert.
type preparedRows []Row

// WriteTx implements projection.PreparedBatch.
func (rows preparedRows) WriteTx(ctx context.Context, tx *sqlx.Tx) error {
	if len(rows) == 0 {
		return nil
	}
	return insertRows(ctx, tx, rows)
}

// Reset implements projection.Projection. It deletes rather than
// truncates, so that readers keep seeing the old rows until a rebuild
// commits instead of waiting on a table lock.
func (*Projection) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM probe_failures`)
	return err
}

// Checksum implements projection.Checksummer: a SHA-256 over every row in
// key order.
func (*Projection) Checksum(ctx context.Context, tx *sqlx.Tx) (string, error) {
	rows, err := tx.QueryxContext(ctx, `SELECT event_log_seq, COALESCE(rollout_id, ''), host_id, probe_name, control_id, framework, observed_at
FROM probe_failures ORDER BY event_log_seq, framework, control_id`)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	h := sha256.New()
	var n int64
	for rows.Next() {
		var r Row
		if err := rows.Scan(&r.Seq, &r.RolloutID, &r.HostID, &r.ProbeName, &r.ControlID, &r.Framework, eventlog.ScanTime(&r.ObservedAt)); err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s\x00%s\x00%s\x00%s\n", r.Seq, r.RolloutID, r.HostID, r.ProbeName, r.ControlID, r.Framework, eventlog.FormatTime(r.ObservedAt))
		n++
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d:%s", n, hex.EncodeToString(h.Sum(nil))), nil
}

const insertPostgres = `INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
SELECT seq, NULLIF(rollout_id, ''), host_id, probe_name, control_id, framework, observed_at
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
     AS t(seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)`

const insertSQLite = `INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, framework, observed_at)
VALUES (?, NULLIF(?, ''), ?, ?, ?, ?, ?)`

func insertRows(ctx context.Context, tx *sqlx.Tx, rows []Row) error {
	b, err := eventlog.BackendOf(tx)
	if err != nil {
		return err
	}
	if b == eventlog.Postgres {
		n := len(rows)
		seqs := make(pq.Int64Array, n)
		rollouts, hosts, probes, controls, frameworks, observed := make(pq.StringArray, n), make(pq.StringArray, n),
			make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n), make(pq.StringArray, n)
		for i, r := range rows {
			seqs[i], rollouts[i], hosts[i], probes[i], controls[i], frameworks[i], observed[i] =
				r.Seq, r.RolloutID, r.HostID, r.ProbeName, r.ControlID, r.Framework, eventlog.FormatTime(r.ObservedAt)
		}
		_, err := tx.ExecContext(ctx, insertPostgres, seqs, rollouts, hosts, probes, controls, frameworks, observed)
		return err
	}
	stmt, err := tx.PreparexContext(ctx, insertSQLite)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range rows {
		if _, err := stmt.ExecContext(ctx, r.Seq, r.RolloutID, r.HostID, r.ProbeName, r.ControlID, r.Framework, eventlog.FormatTime(r.ObservedAt)); err != nil {
			return err
		}
	}
	return nil
}
