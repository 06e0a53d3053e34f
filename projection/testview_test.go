package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing/fstest"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

// testView is an insert-only projection keyed by seq, with every optional
// extension, and a way to make it fail.
type testView struct {
	version int
	kinds   []eventlog.Kind
	// failOn makes Apply fail for payloads containing it.
	failOn string
	// applied counts Apply/ApplyBatch calls' events.
	applied atomic.Int64
}

var errPoison = errors.New("poisoned payload")

func (v *testView) Name() string { return "test_view" }
func (v *testView) Version() int {
	if v.version == 0 {
		return 1
	}
	return v.version
}

func (v *testView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	return v.ApplyBatch(ctx, tx, []eventlog.Event{ev})
}

func (v *testView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	var (
		vals []string
		args []any
	)
	for _, ev := range events {
		if v.failOn != "" && strings.Contains(string(ev.Payload), v.failOn) {
			return projection.EventError(ev.Seq, errPoison)
		}
		vals = append(vals, "(?, ?, ?, ?)")
		args = append(args, ev.Seq, string(ev.Kind), ev.HostID, len(ev.Payload))
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO test_view (event_log_seq, kind, host_id, payload_len) VALUES `+strings.Join(vals, ", ")), args...)
	if err == nil {
		v.applied.Add(int64(len(events)))
	}
	return err
}

func (v *testView) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM test_view`)
	return err
}

func (v *testView) Tables() []string { return []string{"test_view"} }

func (v *testView) Checksum(ctx context.Context, tx *sqlx.Tx) (string, error) {
	var n, sum, lens int64
	err := tx.QueryRowxContext(ctx, `SELECT COUNT(*), COALESCE(SUM(event_log_seq), 0), COALESCE(SUM(payload_len), 0) FROM test_view`).Scan(&n, &sum, &lens)
	return fmt.Sprintf("%d/%d/%d", n, sum, lens), err
}

func (v *testView) Migrations() migrations.Set {
	const table = `CREATE TABLE test_view (
	event_log_seq BIGINT PRIMARY KEY REFERENCES event_log (seq),
	kind TEXT NOT NULL,
	host_id TEXT NOT NULL,
	payload_len INTEGER NOT NULL
);`
	files := fstest.MapFS{"00001_test_view.sql": {Data: []byte("-- +goose Up\n" + table + "\n-- +goose Down\nDROP TABLE test_view;\n")}}
	return migrations.Set{Postgres: files, SQLite: files}
}

// kindView is testView restricted to some kinds.
type kindView struct{ testView }

func (v *kindView) Kinds() []eventlog.Kind { return v.kinds }

// markedView is kindView deriving rows only from payloads that hold one
// of its markers, which it declares (PayloadMarker). With lies set it
// derives rows from every event all the same: a broken promise.
type markedView struct {
	kindView
	markers []string
	lies    bool
}

func (v *markedView) PayloadMarkers() []string { return v.markers }

func (v *markedView) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	return v.ApplyBatch(ctx, tx, []eventlog.Event{ev})
}

func (v *markedView) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	var kept []eventlog.Event
	for _, ev := range events {
		for _, m := range v.markers {
			if v.lies || strings.Contains(string(ev.Payload), m) {
				kept = append(kept, ev)
				break
			}
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return v.kindView.ApplyBatch(ctx, tx, kept)
}

var (
	_ projection.PayloadMarker = (*markedView)(nil)
	_ projection.BatchApplier  = (*testView)(nil)
	_ projection.Tabler        = (*testView)(nil)
	_ projection.Checksummer   = (*testView)(nil)
	_ projection.Migrator      = (*testView)(nil)
	_ projection.KindFilter    = (*kindView)(nil)
)
