package natsforward_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/natstest"
	"github.com/canonlog/canonlog/natsforward"
)

// The forwarder runs database pools, NATS connections and an in-process
// NATS server: nothing may outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is a fresh log and a stream of its own on a NATS server.
type fixture struct {
	b      dbtest.Backend
	log    *eventlog.Log
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string // the stream's name
}

// setup makes a fresh log on backend and, on a NATS server of its own,
// a stream named after the test taking canonlog.>.
func setup(t *testing.T, backend string) *fixture {
	t.Helper()
	natsURL := natstest.Server(t)
	b := dbtest.New(t, backend)
	db := b.Migrated(t)
	log, err := eventlog.New(db, nil)
	require.NoError(t, err)
	_, js := natstest.Connect(t, natsURL)
	name := strings.NewReplacer("/", "_", ".", "_").Replace(t.Name())
	return &fixture{b: b, log: log, js: js, stream: natstest.Stream(t, js, name, "canonlog.>"), name: name}
}

// eventIDs numbers the event ids appendEvents sets.
var eventIDs atomic.Int64

var t0 = time.Date(2026, 5, 16, 1, 0, 0, 123456000, time.UTC)

// appendEvents appends n events cycling through kinds and ids that a
// subject must escape, and returns them.
func appendEvents(t *testing.T, log *eventlog.Log, n int) []eventlog.Event {
	t.Helper()
	hosts := []string{"web-1", "db.example.com", "", "_", "a b*>", "ünï%", "x"}
	kinds := []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect, eventlog.KindPlanAction}
	entries := make([]eventlog.Entry, n)
	for i := range entries {
		entries[i] = eventlog.Entry{
			Kind: kinds[i%len(kinds)], TS: t0.Add(time.Duration(i) * time.Second), HostID: hosts[i%len(hosts)],
			Payload: json.RawMessage(fmt.Sprintf(`{ "n" : %d,"s":"\u00e9 x" }`, i)),
		}
		if i%2 == 0 {
			entries[i].RolloutID = "r-" + strconv.Itoa(i%3)
			entries[i].EventID = "e/" + strconv.FormatInt(eventIDs.Add(1), 10)
		}
	}
	res, err := log.AppendBatch(context.Background(), entries)
	require.NoError(t, err)
	out := make([]eventlog.Event, len(res))
	for i, r := range res {
		out[i] = r.Event
	}
	return out
}

// waitMsgs waits until the stream holds n messages.
func waitMsgs(t *testing.T, s jetstream.Stream, n uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := s.Info(context.Background())
		require.NoError(t, err)
		if info.State.Msgs == n {
			return
		}
		require.Less(t, info.State.Msgs, n, "more messages than events")
		require.True(t, time.Now().Before(deadline), "the stream holds %d messages after 30s, want %d", info.State.Msgs, n)
		time.Sleep(20 * time.Millisecond)
	}
}

// running runs f until the test ends or stop is called, and returns
// what Run returned.
func running(t *testing.T, f *natsforward.Forwarder) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			cancel()
			err, stopped = <-done, true
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func seqOf(t *testing.T, m natstest.Message) int64 {
	t.Helper()
	n, err := strconv.ParseInt(m.Header.Get(natsforward.HeaderSeq), 10, 64)
	require.NoError(t, err)
	return n
}

// TestForward: every event of the forwarder's kinds lands once, in the
// log's order, on the subject its template renders, with its payload
// byte for byte and its fields in headers.
func TestForward(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		fx := setup(t, backend)
		events := appendEvents(t, fx.log, 60)
		f, err := natsforward.New(fx.log, fx.js, &natsforward.Config{
			Stream: fx.name, Subject: "canonlog.{kind}.{host}.{rollout}",
			Kinds:    []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect},
			PageSize: 7, PollInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
		require.NoError(t, err)
		require.Equal(t, natsforward.DefaultName, f.Name())
		var want []eventlog.Event
		for _, ev := range events {
			if ev.Kind != eventlog.KindPlanAction {
				want = append(want, ev)
			}
		}
		stop := running(t, f)
		waitMsgs(t, fx.stream, uint64(len(want)))
		// A second Run of the same Forwarder is refused while it runs.
		require.ErrorIs(t, f.Run(context.Background()), natsforward.ErrRunning)
		more := appendEvents(t, fx.log, 6)
		for _, ev := range more {
			if ev.Kind != eventlog.KindPlanAction {
				want = append(want, ev)
			}
		}
		waitMsgs(t, fx.stream, uint64(len(want)))
		require.NoError(t, stop())

		msgs := natstest.Messages(t, fx.stream)
		require.Len(t, msgs, len(want))
		for i, m := range msgs {
			ev := want[i]
			require.Equal(t, ev.Seq, seqOf(t, m), "message %d", i)
			require.Equal(t, string(ev.Payload), string(m.Data), "the payload, byte for byte")
			require.Equal(t, "canonlog-"+strconv.FormatInt(ev.Seq, 10), m.Header.Get(jetstream.MsgIDHeader))
			require.Equal(t, string(ev.Kind), m.Header.Get(natsforward.HeaderKind))
			require.Equal(t, natsforward.DefaultName, m.Header.Get(natsforward.HeaderConsumer))
			ts, err := time.Parse(time.RFC3339Nano, m.Header.Get(natsforward.HeaderTS))
			require.NoError(t, err)
			require.True(t, ev.TS.Equal(ts), "ts %s, header %s", ev.TS, ts)
			for _, h := range []struct{ name, want string }{{natsforward.HeaderHost, ev.HostID}, {natsforward.HeaderRollout, ev.RolloutID},
				{natsforward.HeaderEventID, ev.EventID}} {
				if h.want == "" {
					require.NotContains(t, m.Header, h.name)
					continue
				}
				got, err := url.PathUnescape(m.Header.Get(h.name))
				require.NoError(t, err)
				require.Equal(t, h.want, got, h.name)
			}
			tokens := strings.Split(m.Subject, ".")
			require.Len(t, tokens, 4, m.Subject)
			require.Equal(t, []string{"canonlog", string(ev.Kind)}, tokens[:2])
			for j, id := range []string{ev.HostID, ev.RolloutID} {
				tok := tokens[2+j]
				if id == "" {
					require.Equal(t, natsforward.EmptyToken, tok)
					continue
				}
				got, err := url.PathUnescape(tok)
				require.NoError(t, err)
				require.Equal(t, id, got, m.Subject)
			}
		}
		// The escaped subjects, spelled out.
		subjects := map[string]bool{}
		for _, m := range msgs {
			subjects[m.Subject] = true
		}
		all := strings.Join(slices.Sorted(maps.Keys(subjects)), " ")
		for _, s := range []string{"canonlog.agent_event.web-1.r-0", ".db%2Eexample%2Ecom.", "._.", ".%5F.", ".a%20b%2A%3E.", ".%C3%BCn%C3%AF%25."} {
			require.Contains(t, all, s)
		}

		// Its status is the consumer's.
		sts, err := consumer.ReadStatus(context.Background(), fx.log)
		require.NoError(t, err)
		require.Len(t, sts, 1)
		require.Equal(t, want[len(want)-1].Seq, sts[0].HandledSeq)
	})
}

// TestNew: New refuses what Run could not run, with ErrInvalidConfig,
// and touches nothing.
func TestNew(t *testing.T) {
	t.Parallel()
	fx := setup(t, "sqlite")
	ok := natsforward.Config{Stream: "S"}
	for name, tc := range map[string]struct {
		mod  func(c *natsforward.Config)
		want string
	}{
		"no stream":                {func(c *natsforward.Config) { c.Stream = "" }, "Stream is required"},
		"stream with a dot":        {func(c *natsforward.Config) { c.Stream = "a.b" }, "is not a stream name"},
		"stream with a space":      {func(c *natsforward.Config) { c.Stream = "a b" }, "is not a stream name"},
		"bad name":                 {func(c *natsforward.Config) { c.Name = "Bad-Name" }, "Name must be lowercase"},
		"bad kind":                 {func(c *natsforward.Config) { c.Kinds = []eventlog.Kind{"No Such"} }, "kind"},
		"page size over the limit": {func(c *natsforward.Config) { c.PageSize = natsforward.MaxPageSize + 1 }, "PageSize is 10001"},
		"negative page size":       {func(c *natsforward.Config) { c.PageSize = -1 }, "PageSize is -1"},
		"negative ack timeout":     {func(c *natsforward.Config) { c.AckTimeout = -time.Second }, "AckTimeout is -1s"},
		"negative backoff":         {func(c *natsforward.Config) { c.MinBackoff = -time.Second }, "MinBackoff"},
		"unknown placeholder":      {func(c *natsforward.Config) { c.Subject = "canonlog.{host}.{nope}" }, "unknown placeholder {nope}"},
		"unclosed brace":           {func(c *natsforward.Config) { c.Subject = "canonlog.{host" }, "never closed"},
		"stray brace":              {func(c *natsforward.Config) { c.Subject = "canonlog.host}" }, "stray braces"},
		"wildcard":                 {func(c *natsforward.Config) { c.Subject = "canonlog.*.{host}" }, "no wildcards"},
		"full wildcard":            {func(c *natsforward.Config) { c.Subject = "canonlog.>" }, "no wildcards"},
		"whitespace":               {func(c *natsforward.Config) { c.Subject = "canon log.{kind}" }, "whitespace"},
		"empty token":              {func(c *natsforward.Config) { c.Subject = "canonlog..{kind}" }, "empty token"},
		"trailing dot":             {func(c *natsforward.Config) { c.Subject = "canonlog.{kind}." }, "empty token"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			_, err := natsforward.New(fx.log, fx.js, &cfg)
			require.ErrorIs(t, err, natsforward.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := natsforward.New(fx.log, fx.js, nil)
	require.ErrorIs(t, err, natsforward.ErrInvalidConfig)
	_, err = natsforward.New(nil, fx.js, &ok)
	require.ErrorIs(t, err, natsforward.ErrInvalidConfig)
	_, err = natsforward.New(fx.log, nil, &ok)
	require.ErrorIs(t, err, natsforward.ErrInvalidConfig)
	sts, err := consumer.ReadStatus(context.Background(), fx.log)
	require.NoError(t, err)
	require.Empty(t, sts, "New touches no table")
}

// TestStreamRefused: Run stops before publishing when the stream does not
// exist or does not take the template's subjects.
func TestStreamRefused(t *testing.T) {
	t.Parallel()
	fx := setup(t, "sqlite")
	appendEvents(t, fx.log, 3)
	require.NoError(t, fx.js.DeleteStream(context.Background(), fx.name))
	natstest.Stream(t, fx.js, "OTHER", "other.>", "canonlog.agent_event.*")
	for name, tc := range map[string]struct {
		cfg  natsforward.Config
		want string
	}{
		"missing": {natsforward.Config{Stream: "NOPE"}, `stream "NOPE" does not exist: create it first`},
		"subjects not covered": {natsforward.Config{Stream: "OTHER"},
			`which do not cover "canonlog.*.*" (from template "canonlog.{kind}.{host}")`},
		"a kind not covered": {natsforward.Config{Stream: "OTHER", Kinds: []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect}},
			`do not cover "canonlog.effect.*"`},
		"too many tokens": {natsforward.Config{Stream: "OTHER", Kinds: []eventlog.Kind{eventlog.KindAgentEvent}, Subject: "canonlog.{kind}.{host}.{rollout}"},
			`do not cover "canonlog.agent_event.*.*"`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Name, cfg.Logger = "fwd_"+strings.ReplaceAll(name, " ", "_"), quiet()
			f, err := natsforward.New(fx.log, fx.js, &cfg)
			require.NoError(t, err)
			err = f.Run(context.Background())
			require.ErrorIs(t, err, natsforward.ErrStream)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// The kinds it forwards are covered: it runs.
	f, err := natsforward.New(fx.log, fx.js, &natsforward.Config{Stream: "OTHER", Kinds: []eventlog.Kind{eventlog.KindAgentEvent},
		PollInterval: 10 * time.Millisecond, Logger: quiet()})
	require.NoError(t, err)
	stop := running(t, f)
	s, err := fx.js.Stream(context.Background(), "OTHER")
	require.NoError(t, err)
	waitMsgs(t, s, 1)
	require.NoError(t, stop())
}

// TestStreamModified: a message in the stream that the forwarder did not
// publish stops it, whether it is there at its start or lands while it
// runs, and it says where.
func TestStreamModified(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		fx := setup(t, backend)
		appendEvents(t, fx.log, 10)
		cfg := &natsforward.Config{Stream: fx.name, PollInterval: 10 * time.Millisecond, Logger: quiet()}
		f, err := natsforward.New(fx.log, fx.js, cfg)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx) }()
		waitMsgs(t, fx.stream, 10)

		// Another publisher.
		_, err = fx.js.Publish(context.Background(), "canonlog.intruder.x", []byte("{}"))
		require.NoError(t, err)
		appendEvents(t, fx.log, 2)
		var runErr error
		select {
		case runErr = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the forwarder did not stop within 30s")
		}
		require.ErrorIs(t, runErr, natsforward.ErrStreamModified)
		require.ErrorContains(t, runErr, fmt.Sprintf(`stream %q holds, at sequence 11, a message on "canonlog.intruder.x" that it did not publish`, fx.name))
		info, err := fx.stream.Info(context.Background())
		require.NoError(t, err)
		require.EqualValues(t, 11, info.State.Msgs, "nothing published after the intruder")

		// At its start, too.
		require.ErrorIs(t, f.Run(context.Background()), natsforward.ErrStreamModified)
	})
}

// TestStop: Run returns nil when its context ends, the page in hand
// acknowledged and saved, and a new Run resumes without a gap or a
// duplicate.
func TestStop(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		fx := setup(t, backend)
		events := appendEvents(t, fx.log, 3000)
		f, err := natsforward.New(fx.log, fx.js, &natsforward.Config{Stream: fx.name, PageSize: 100, PollInterval: 10 * time.Millisecond, Logger: quiet()})
		require.NoError(t, err)
		for range 3 {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			time.Sleep(50 * time.Millisecond)
			cancel()
			require.NoError(t, <-done)
		}
		stop := running(t, f)
		waitMsgs(t, fx.stream, uint64(len(events)))
		require.NoError(t, stop())
		for i, m := range natstest.Messages(t, fx.stream) {
			require.Equal(t, events[i].Seq, seqOf(t, m))
		}
	})
}

// TestUnpublishable: an event larger than the stream takes fails under
// the consumer's policy: FailStop stops the forwarder on it, FailPark
// leaves it out and goes on.
func TestUnpublishable(t *testing.T) {
	t.Parallel()
	fx := setup(t, "sqlite")
	ctx := context.Background()
	_, err := fx.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 1024})
	require.NoError(t, err)
	small, err := fx.js.Stream(ctx, "SMALL")
	require.NoError(t, err)
	big := eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{"blob":"` + strings.Repeat("x", 2000) + `"}`)}
	ok := eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{}`)}
	res, err := fx.log.AppendBatch(ctx, []eventlog.Entry{ok, ok, big, ok})
	require.NoError(t, err)

	cfg := &natsforward.Config{Name: "small_stop", Stream: "SMALL", Subject: "small.{kind}", Attempts: 2, MinBackoff: time.Millisecond, Logger: quiet()}
	f, err := natsforward.New(fx.log, fx.js, cfg)
	require.NoError(t, err)
	err = f.Run(ctx)
	var he *consumer.HandlerError
	require.ErrorAs(t, err, &he)
	require.Equal(t, res[2].Event.Seq, he.Seq)
	require.ErrorIs(t, err, natsforward.ErrUnpublishable)
	require.ErrorContains(t, err, "over the limit of 1024")
	msgs := natstest.Messages(t, small)
	require.Len(t, msgs, 2, "the events before it are forwarded")

	// Parked: the stream goes on without it (the same stream needs a new
	// one: it holds small_stop's messages).
	_, err = fx.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL2", Subjects: []string{"small2.>"}, MaxMsgSize: 1024})
	require.NoError(t, err)
	cfg = &natsforward.Config{Name: "small_park", Stream: "SMALL2", Subject: "small2.{kind}", Attempts: 1, OnFailure: consumer.FailPark,
		PollInterval: 10 * time.Millisecond, Logger: quiet()}
	f, err = natsforward.New(fx.log, fx.js, cfg)
	require.NoError(t, err)
	stop := running(t, f)
	small2, err := fx.js.Stream(ctx, "SMALL2")
	require.NoError(t, err)
	waitMsgs(t, small2, 3)
	require.NoError(t, stop())
	parked, err := consumer.ListParked(ctx, fx.log, "small_park")
	require.NoError(t, err)
	require.Len(t, parked, 1)
	require.Equal(t, res[2].Event.Seq, parked[0].Seq)
}

// TestNATSDown: with NATS unreachable Run waits and tries again, and
// stops cleanly when its context ends.
func TestNATSDown(t *testing.T) {
	t.Parallel()
	fx := setup(t, "sqlite")
	appendEvents(t, fx.log, 5)
	nc := fx.js.Conn()
	nc.Close()
	f, err := natsforward.New(fx.log, fx.js, &natsforward.Config{Stream: fx.name, Logger: quiet()})
	require.NoError(t, err)
	// A closed connection never comes back: Run says so at once.
	err = f.Run(context.Background())
	require.Error(t, err)
	require.True(t, errors.Is(err, natsforward.ErrStream) || strings.Contains(err.Error(), "connection closed"), "%v", err)
}
