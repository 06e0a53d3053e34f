package natsforward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/natsforward"
)

// embeddedNATS starts a NATS server with JetStream in the process, as
// the tests do; a deployment connects to its own servers instead.
func embeddedNATS() (url string, shutdown func()) {
	dir, err := os.MkdirTemp("", "natsforward-example-")
	if err != nil {
		panic(err)
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		panic("nats-server not ready")
	}
	return s.ClientURL(), func() {
		s.Shutdown()
		s.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
}

// A forwarder publishes the log's events to a JetStream stream, where
// other machines consume them.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	natsURL, shutdown := embeddedNATS()
	defer shutdown()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		panic(err)
	}
	log, err := eventlog.New(db, nil)
	if err != nil {
		panic(err)
	}
	for _, host := range []string{"web-1", "db.example.com"} {
		if _, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host,
			Payload: json.RawMessage(`{"type":"Heartbeat"}`)}); err != nil {
			panic(err)
		}
	}

	nc, err := nats.Connect(natsURL)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	// The stream is created once, by whoever operates NATS; the forwarder
	// checks that it exists and takes the subjects.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       "CANONLOG",
		Subjects:   []string{"canonlog.>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
		DenyDelete: true,
		DenyPurge:  true,
	}); err != nil {
		panic(err)
	}
	fwd, err := natsforward.New(log, js, &natsforward.Config{
		Stream:  "CANONLOG",
		Subject: "canonlog.{kind}.{host}",
		Kinds:   []eventlog.Kind{eventlog.KindAgentEvent},
	})
	if err != nil {
		panic(err)
	}
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }() // a service runs it until shutdown

	// Another machine reads the stream.
	cons, err := js.OrderedConsumer(ctx, "CANONLOG", jetstream.OrderedConsumerConfig{})
	if err != nil {
		panic(err)
	}
	for range 2 {
		msg, err := cons.Next()
		if err != nil {
			panic(err)
		}
		h := msg.Headers()
		fmt.Printf("%s seq=%s id=%s %s\n", msg.Subject(), h.Get(natsforward.HeaderSeq), h.Get(jetstream.MsgIDHeader), msg.Data())
	}
	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	// Output:
	// canonlog.agent_event.web-1 seq=1 id=canonlog-1 {"type":"Heartbeat"}
	// canonlog.agent_event.db%2Eexample%2Ecom seq=2 id=canonlog-2 {"type":"Heartbeat"}
}
