// Package natstest runs a NATS server with JetStream inside the test
// process, so that tests of the forwarder need nothing installed.
package natstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server starts a NATS server with JetStream on a free port of 127.0.0.1,
// storing in a temporary directory of t, and returns its URL. It shuts
// down when t ends.
func Server(t testing.TB) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		t.Fatalf("natstest: the server is not ready after 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

// Connect connects to url and returns the connection and its JetStream
// context; the connection closes when t ends.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return nc, js
}

// Stream creates a stream of file storage named name on subjects, with
// the configuration docs/consumers.md recommends for a forwarder's
// stream.
func Stream(t testing.TB, js jetstream.JetStream, name string, subjects ...string) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := jetstream.StreamConfig{
		Name:       name,
		Subjects:   subjects,
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
		DenyDelete: true,
	}
	for attempt := 1; ; attempt++ {
		s, err := js.CreateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		// Under the load of the whole suite the embedded server once
		// failed to create a stream's file store ("error creating store
		// for stream", 10049) right after another stream was deleted;
		// alone it never did in 40 runs. A test's setup tries again.
		if err != nil && errors.As(err, &apiErr) && apiErr.ErrorCode == errStreamCreate && attempt < 3 {
			t.Logf("natstest: create stream %s, attempt %d: %v", name, attempt, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("natstest: create stream %s: %v", name, err)
		}
		return s
	}
}

// errStreamCreate is the server's "error creating store for stream"
// (JSStreamCreateErrF), which nats.go names no constant for.
const errStreamCreate jetstream.ErrorCode = 10049

// Message is a forwarded message as a test reads it back.
type Message struct {
	StreamSeq uint64
	Subject   string
	Header    nats.Header
	Data      []byte
}

// Messages returns every message of stream s, in stream order, read with
// an ordered consumer.
func Messages(t testing.TB, s jetstream.Stream) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	var out []Message
	if info.State.Msgs == 0 {
		return out
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	for uint64(len(out)) < info.State.Msgs {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatalf("natstest: fetch: %v", err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("natstest: %v", err)
			}
			out = append(out, Message{StreamSeq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("natstest: fetch: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatalf("natstest: read %d of %d messages in 2m", len(out), info.State.Msgs)
		}
	}
	return out
}
