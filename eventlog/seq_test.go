package eventlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// Seqs are not gap-free on PostgreSQL, and on SQLite the seqs of a failed
// append go to the next event (docs/architecture.md, "Seqs").
func TestSeqGaps(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		boom := errors.New("boom")
		hook := &recordingHook{}
		log, _ := setup(t, backend, &eventlog.Config{Hook: hook})
		e := eventlog.Entry{Kind: "k", Payload: json.RawMessage(`{}`), EventID: "once"}
		first, err := log.Append(ctx, e)
		require.NoError(t, err)

		// A duplicate, alone and in a batch.
		dup, err := log.Append(ctx, e)
		require.NoError(t, err)
		require.True(t, dup.Duplicate)
		res, err := log.AppendBatch(ctx, []eventlog.Entry{e, e})
		require.NoError(t, err)
		require.True(t, res[0].Duplicate)
		afterDup, err := log.Append(ctx, entry("h", `{}`))
		require.NoError(t, err)

		// A failed append, alone and as a batch of 3.
		hook.fail = boom
		_, err = log.Append(ctx, entry("h", `{}`))
		require.ErrorIs(t, err, boom)
		_, err = log.AppendBatch(ctx, []eventlog.Entry{entry("h", `{}`), entry("h", `{}`), entry("h", `{}`)})
		require.ErrorIs(t, err, boom)
		hook.fail = nil
		afterFail, err := log.Append(ctx, entry("h", `{}`))
		require.NoError(t, err)

		if backend == "sqlite" {
			require.Equal(t, first.Event.Seq+1, afterDup.Event.Seq, "a duplicate takes no seq")
			require.Equal(t, afterDup.Event.Seq+1, afterFail.Event.Seq, "a failed append's seqs go to the next event")
			return
		}
		require.Greater(t, afterDup.Event.Seq, first.Event.Seq+1, "a duplicate draws a seq")
		// The single append drew 1, the batch 3.
		require.GreaterOrEqual(t, afterFail.Event.Seq, afterDup.Event.Seq+5, "a failed append's seqs are never handed out again")
	})
}

// The database assigns seq and tx_id: the trigger refuses explicit ones
// even from a role with every privilege (here the test's superuser
// connection), so the protection does not rest on grants alone. The least
// privilege test covers the service role.
func TestAssignedSeqPostgres(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	ctx := context.Background()
	b := dbtest.New(t, "postgres")
	db := b.Migrated(t)
	log, err := eventlog.New(db, &eventlog.Config{Clock: eventlogtest.NewFakeClock(t0)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = log.Close() })
	_, err = log.AppendBatch(ctx, []eventlog.Entry{entry("h", `{"a":1}`), entry("h", `{"a":2}`)})
	require.NoError(t, err)
	head, err := log.LastSeq(ctx)
	require.NoError(t, err)
	before := dumpLog(t, db)

	const (
		values  = `('2026-05-16T01:00:00Z', 'effect', '{"forged":true}')`
		withSeq = `INSERT INTO event_log (seq, ts, kind, payload) OVERRIDING SYSTEM VALUE VALUES `
	)
	// A session that never drew a seq cannot even compare: currval fails,
	// which refuses the insert too.
	fresh := plainDB(t, b)
	_, err = fresh.ExecContext(ctx, withSeq+`(1000000, `+values[1:])
	require.Error(t, err)
	t.Logf("explicit seq, fresh session: %v", err)
	require.Equal(t, before, dumpLog(t, db))

	// A session that did draw seqs gets the trigger's own refusal.
	conn := plainDB(t, b)
	_, err = conn.ExecContext(ctx, `INSERT INTO event_log (ts, kind, payload) VALUES `+values)
	require.NoError(t, err)
	before = dumpLog(t, db)
	var drawn int64
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT currval('event_log_seq_seq')`).Scan(&drawn))
	// A gap: a seq another session drew and gave up.
	var gap int64
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, tx.GetContext(ctx, &gap, `INSERT INTO event_log (ts, kind, payload) VALUES `+values+` RETURNING seq`))
	require.NoError(t, tx.Rollback())
	for _, tc := range []struct {
		name, stmt string
		args       []any
		want       string
	}{
		{"seq ahead of the head", withSeq + `($1, ` + values[1:], []any{drawn + 1000}, "explicit seq"},
		{"seq in a gap", withSeq + `($1, ` + values[1:], []any{gap}, "explicit seq"},
		{"seq of a stored event", withSeq + `($1, ` + values[1:], []any{drawn - 1}, "explicit seq"},
		{"seq 0", withSeq + `(0, ` + values[1:], nil, "explicit seq"},
		{"tx_id", `INSERT INTO event_log (ts, kind, payload, tx_id) VALUES ('2026-05-16T01:00:00Z', 'effect', '{}', '1')`, nil, "explicit tx_id"},
		{"tx_id of an old transaction", `INSERT INTO event_log (ts, kind, payload, tx_id) SELECT '2026-05-16T01:00:00Z', 'effect', '{}', tx_id FROM event_log ORDER BY seq LIMIT 1`, nil, "explicit tx_id"},
		{"several rows, one explicit", withSeq + `(DEFAULT, '2026-05-16T01:00:00Z', 'effect', '{}'), ($1, ` + values[1:], []any{drawn + 5000}, "explicit seq"},
	} {
		_, err := conn.ExecContext(ctx, tc.stmt, tc.args...)
		var pqErr *pq.Error
		require.True(t, errors.As(err, &pqErr), "%s: %v", tc.name, err)
		require.Equal(t, "42501", string(pqErr.Code), "%s: %v", tc.name, err)
		require.Contains(t, pqErr.Message, tc.want, tc.name)
		require.NotEmpty(t, pqErr.Hint, tc.name)
		require.Equal(t, before, dumpLog(t, db), tc.name)
	}

	// COPY with a seq or tx_id column: the same trigger fires per row.
	for _, cols := range []string{"seq, ts, kind, payload", "ts, kind, payload, tx_id"} {
		err := dbtest.CopyRow(ctx, conn, cols, drawn+2000)
		var pqErr *pq.Error
		require.True(t, errors.As(err, &pqErr), "COPY (%s): %v", cols, err)
		require.Equal(t, "42501", string(pqErr.Code), "COPY (%s): %v", cols, err)
		require.Equal(t, before, dumpLog(t, db), cols)
	}

	// The log's own paths still append, and the head moved only by them.
	one, err := log.Append(ctx, entry("h", `{"a":3}`))
	require.NoError(t, err)
	require.Greater(t, one.Event.Seq, head)
	batch, err := log.AppendBatch(ctx, []eventlog.Entry{entry("h", `{"a":4}`), entry("h", `{"a":5}`)})
	require.NoError(t, err)
	require.Greater(t, batch[1].Event.Seq, batch[0].Event.Seq)
	last, err := log.LastSeq(ctx)
	require.NoError(t, err)
	require.Equal(t, batch[1].Event.Seq, last)
}
