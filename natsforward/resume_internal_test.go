package natsforward

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/natstest"
)

// TestInStreamAlready: events the stream holds already are not published
// again, whether the forwarder learns it from the stream's tail (after a
// reset of its position) or from JetStream's duplicates window (when the
// tail it read is stale).
func TestInStreamAlready(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Server(t))
	stream := natstest.Stream(t, js, "S", "canonlog.>")
	log, err := eventlog.New(dbtest.New(t, "sqlite").Migrated(t), nil)
	require.NoError(t, err)
	entries := make([]eventlog.Entry, 5)
	for i := range entries {
		entries[i] = eventlog.Entry{Kind: eventlog.KindEffect, HostID: "h", Payload: json.RawMessage(`{}`)}
	}
	_, err = log.AppendBatch(ctx, entries)
	require.NoError(t, err)
	f, err := New(log, js, &Config{Stream: "S", PollInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)

	forward := func() {
		t.Helper()
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f.Run(rctx) }()
		require.Eventually(t, func() bool {
			sts, err := consumer.ReadStatus(ctx, log)
			return err == nil && len(sts) == 1 && sts[0].HandledSeq == 5
		}, 30*time.Second, 10*time.Millisecond)
		cancel()
		require.NoError(t, <-done)
		info, err := stream.Info(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 5, info.State.Msgs)
	}
	forward()

	// A reset position: the tail read back has every event.
	require.NoError(t, consumer.Reset(ctx, log, DefaultName, 0))
	forward()

	// A stale tail: JetStream's duplicates window refuses the events, and
	// the forwarder reads the tail again.
	require.NoError(t, consumer.Reset(ctx, log, DefaultName, 0))
	require.NoError(t, f.open(ctx))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.stop = cancel
	f.synced, f.last, f.skip, f.prev = true, 5, nil, nil
	events, err := log.Query(ctx, eventlog.Filter{})
	require.NoError(t, err)
	var logged bytes.Buffer
	f.cfg.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	require.NoError(t, f.handle(rctx, events))
	require.Contains(t, logged.String(), "event 1: the stream's last sequence is not the expected one: it is already at stream sequence 1 (Nats-Msg-Id canonlog-1)")
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, info.State.Msgs)
}

// TestTemplate: subjects, the patterns the stream must cover, and the
// coverage rule.
func TestTemplate(t *testing.T) {
	t.Parallel()
	tpl, err := parseTemplate("fleet.{kind}.h-{host}.{rollout}")
	require.NoError(t, err)
	ev := &eventlog.Event{Kind: eventlog.KindAgentEvent, HostID: "a.b c", RolloutID: ""}
	require.Equal(t, "fleet.agent_event.h-a%2Eb%20c._", string(tpl.render(nil, ev)))
	require.Equal(t, "fleet.*.*.*", tpl.pattern(""))
	require.Equal(t, "fleet.agent_event.*.*", tpl.pattern(eventlog.KindAgentEvent))

	for _, tc := range []struct {
		pattern, filter string
		want            bool
	}{
		{"canonlog.*.*", "canonlog.>", true},
		{"canonlog.*.*", "canonlog.*.*", true},
		{"canonlog.*.*", "canonlog.*", false},
		{"canonlog.*.*", "canonlog.agent_event.*", false},
		{"canonlog.agent_event.*", "canonlog.agent_event.*", true},
		{"canonlog.agent_event.*", "canonlog.*.>", true},
		{"canonlog.agent_event.*", "*.*.*", true},
		{"canonlog.agent_event.*", ">", true},
		{"canonlog.agent_event.*", "canonlog.agent_event.*.*", false},
		{"canonlog", "canonlog.>", false},
	} {
		require.Equal(t, tc.want, subjectCovered(tc.pattern, tc.filter), "%s in %s", tc.pattern, tc.filter)
	}
	require.Equal(t, "%5F", string(appendToken(nil, "_")))
	require.Equal(t, "_", string(appendToken(nil, "")))
	require.Equal(t, "100%25%0A%20x", string(appendHeaderValue(nil, "100%\n x")))
}
