package consumer_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
)

// A position holding a transaction id the server has not handed out yet
// (the database was restored into another cluster) is refused with the
// command that repositions the consumer; after the reset it runs. A log
// holding such ids is refused too, whatever the position.
func TestForeignTxIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log, db := setup(t, "postgres")
	res, err := log.AppendBatch(ctx, []eventlog.Entry{agent("h", `{"n":1}`), agent("h", `{"n":2}`)})
	require.NoError(t, err)
	cfg := consumer.Config{Name: "restored", HandleTx: recordTx, Logger: quiet}
	c, err := consumer.New(log, &cfg)
	require.NoError(t, err)
	stop := running(t, c)
	waitUntil(t, "both events", func() bool { return len(seen(t, db)) == 2 })
	require.NoError(t, stop())

	// The position as another cluster would have left it: far ahead of
	// this server's transaction ids.
	foreign, err := json.Marshal(eventlog.Position{TxID: 1 << 40})
	require.NoError(t, err)
	_, err = db.Exec(`UPDATE canonlog_consumers SET position = $1 WHERE name = 'restored'`, string(foreign))
	require.NoError(t, err)
	err = c.Run(ctx)
	require.ErrorIs(t, err, eventlog.ErrForeignTxIDs)
	require.ErrorContains(t, err, "consumers reset --name restored --to-seq 2")

	require.NoError(t, consumer.Reset(ctx, log, "restored", res[1].Event.Seq))
	_, err = log.Append(ctx, agent("h", `{"n":3}`))
	require.NoError(t, err)
	stop = running(t, c)
	waitUntil(t, "the event after the reset", func() bool { return len(seen(t, db)) == 3 })
	require.NoError(t, stop())

	// A row as another cluster would have left it: a restore loads the
	// rows before it creates the trigger that refuses an explicit tx_id.
	conn, err := db.Connx(ctx)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `SET session_replication_role = replica`)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `INSERT INTO event_log (ts, kind, payload, tx_id) VALUES (now(), 'effect', '{}', '1099511627776'::xid8)`)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `RESET session_replication_role`)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	err = c.Run(ctx)
	require.ErrorIs(t, err, eventlog.ErrForeignTxIDs)
	require.ErrorContains(t, err, "event_log holds transaction id 1099511627776")
	require.ErrorContains(t, err, "pg_resetwal -e 256 -x 1048576")
	require.Error(t, log.CheckTxIDs(ctx, eventlog.Position{}))
}
