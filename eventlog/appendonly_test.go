package eventlog_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// plainDB opens b's database with the bare driver: none of OpenDB's
// per-connection settings, as any other program touching the file (or the
// server) would. On SQLite that means recursive_triggers off, so REPLACE
// deletes rows without firing delete triggers.
func plainDB(t *testing.T, b dbtest.Backend) *sql.DB {
	t.Helper()
	driver, dsn := "postgres", b.URL
	if b.Name == "sqlite" {
		driver, dsn = "sqlite", strings.TrimPrefix(b.URL, "sqlite:")
	}
	db, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	// One connection, so a setting checked below is the one every
	// statement runs with.
	db.SetMaxOpenConns(1)
	if b.Name == "sqlite" {
		var recursive int
		require.NoError(t, db.QueryRow(`PRAGMA recursive_triggers`).Scan(&recursive))
		require.Zero(t, recursive, "the plain connection must not fire delete triggers on REPLACE")
	}
	return db
}

// Contract 3, inserts: no INSERT, whatever its conflict clause, replaces
// or alters a stored event, on any connection.
func TestAppendOnlyInsert(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		db := b.Migrated(t)
		log, err := eventlog.New(db, &eventlog.Config{Clock: eventlogtest.NewFakeClock(t0)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })
		stored, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{"amount":100}`), EventID: "pay-1"})
		require.NoError(t, err)
		_, err = log.Append(ctx, entry("h", `{"a":1}`))
		require.NoError(t, err)
		before := dumpLog(t, db)
		plain := plainDB(t, b)

		// Each statement writes {"amount":1} over the stored event: at its
		// seq, under its event id, or both.
		type attempt struct{ name, stmt string }
		var attempts []attempt
		if backend == "sqlite" {
			const (
				cols = ` INTO event_log (seq, ts, kind, payload, event_id) VALUES `
				ts   = `'2026-05-16T01:00:00.000000Z'`
			)
			rows := map[string]string{
				"seq":      `(?, ` + ts + `, 'effect', '{"amount":1}', 'other-id')`,
				"event_id": `(NULL, ` + ts + `, 'effect', '{"amount":1}', 'pay-1')`,
				"both":     `(?, ` + ts + `, 'effect', '{"amount":1}', 'pay-1')`,
			}
			for _, verb := range []string{"INSERT OR REPLACE", "REPLACE", "INSERT OR IGNORE", "INSERT OR ROLLBACK", "INSERT OR ABORT", "INSERT OR FAIL", "INSERT"} {
				for _, on := range []string{"seq", "event_id", "both"} {
					attempts = append(attempts, attempt{verb + " on " + on, verb + cols + rows[on]})
				}
			}
			for _, on := range []string{"seq", "event_id"} {
				attempts = append(attempts,
					attempt{"upsert DO UPDATE on " + on, `INSERT` + cols + rows["both"] + ` ON CONFLICT (` + on + `) DO UPDATE SET payload = excluded.payload`},
					attempt{"upsert DO NOTHING on " + on, `INSERT` + cols + rows["both"] + ` ON CONFLICT (` + on + `) DO NOTHING`})
			}
			// -1 is what a BEFORE trigger sees when SQLite picks the seq;
			// a row may not take it (nor any seq below 1) explicitly.
			attempts = append(attempts,
				attempt{"explicit seq -1", `INSERT INTO event_log (seq, ts, kind, payload) VALUES (-1, ` + ts + `, 'effect', '{"amount":1}')`},
				attempt{"explicit seq 0", `INSERT INTO event_log (seq, ts, kind, payload) VALUES (0, ` + ts + `, 'effect', '{"amount":1}')`})
		} else {
			const (
				cols = `INSERT INTO event_log (seq, ts, kind, payload, event_id) OVERRIDING SYSTEM VALUE VALUES `
				ts   = `'2026-05-16T01:00:00Z'`
			)
			attempts = []attempt{
				{"explicit seq", cols + `($1, ` + ts + `, 'effect', '{"amount":1}', 'other-id')`},
				{"upsert DO UPDATE on seq", cols + `($1, ` + ts + `, 'effect', '{"amount":1}', 'pay-1') ON CONFLICT (seq) DO UPDATE SET payload = excluded.payload`},
				{"upsert DO UPDATE on event_id", `INSERT INTO event_log (ts, kind, payload, event_id) VALUES (` + ts + `, 'effect', '{"amount":1}', 'pay-1') ON CONFLICT (event_id) DO UPDATE SET payload = excluded.payload`},
			}
		}
		for _, a := range attempts {
			var args []any
			if strings.Contains(a.stmt, "?") || strings.Contains(a.stmt, "$1") {
				args = append(args, stored.Event.Seq)
			}
			_, err := plain.ExecContext(ctx, a.stmt, args...)
			require.Error(t, err, a.name)
			if backend == "sqlite" {
				require.Regexp(t, `event_log is append-only: INSERT over a stored (seq|event_id) refused|event_log: seq must be positive`, err.Error(), a.name)
			}
			t.Logf("%s: %v", a.name, err)
			require.Equal(t, before, dumpLog(t, db), a.name)
		}
		got, err := log.Get(ctx, stored.Event.Seq)
		require.NoError(t, err)
		require.Equal(t, `{"amount":100}`, string(got.Payload))

		// Appends go on as before: a duplicate is still recognised, a new
		// entry still lands.
		dup, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{"amount":100}`), EventID: "pay-1"})
		require.NoError(t, err)
		require.True(t, dup.Duplicate)
		require.Equal(t, stored.Event, dup.Event)
		fresh, err := log.Append(ctx, entry("h", `{"a":2}`))
		require.NoError(t, err)
		require.Greater(t, fresh.Event.Seq, stored.Event.Seq)
	})
}

// On SQLite an append reads the insert trigger's refusal of a stored event
// id as a duplicate; any other trigger's refusal stays an error.
func TestOtherInsertTriggerSQLite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log, db := setup(t, "sqlite", nil)
	_, err := db.ExecContext(ctx, `CREATE TRIGGER app_refuses BEFORE INSERT ON event_log WHEN NEW.kind = 'refused'
BEGIN SELECT RAISE(ABORT, 'the application refuses this kind'); END`)
	require.NoError(t, err)
	for _, batch := range [][]eventlog.Entry{
		{{Kind: "refused", Payload: json.RawMessage(`{}`), EventID: "r-1"}},
		{entry("h", `{}`), {Kind: "refused", Payload: json.RawMessage(`{}`), EventID: "r-2"}},
	} {
		res, err := log.AppendBatch(ctx, batch)
		require.ErrorContains(t, err, "the application refuses this kind")
		require.Nil(t, res)
	}
	require.Zero(t, countEvents(t, db))
}
