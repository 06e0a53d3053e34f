package natsforward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/natstest"
	"github.com/canonlog/canonlog/natsforward"
)

// benchEvents is how many events each run of BenchmarkForward forwards.
const benchEvents = 50000

// benchPayload is a probe result of about 260 bytes, as agents post them.
func benchPayload(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh-hardening",`+
		`"observed_at":"2026-05-16T01:00:00Z","sub_results":[{"control_id":"CIS-5.2.%d","framework":"cis","status":"fail"},`+
		`{"control_id":"CIS-5.2.2","framework":"cis","status":"pass"}],"n":"%08d"}`, i%10, i))
}

// BenchmarkForward measures the forwarder's throughput from a PostgreSQL
// log of benchEvents realistic events to an in-process JetStream server
// with file storage, by page size, side by side with the same messages
// published straight to a stream with the same pipelining (raw_publish:
// no database, no headers beyond Nats-Msg-Id). It reports events/s.
//
//	CANONLOG_REQUIRE_POSTGRES=1 go test -run '^$' -bench BenchmarkForward -benchtime 3x ./natsforward/
func BenchmarkForward(b *testing.B) {
	ctx := context.Background()
	db := dbtest.New(b, "postgres").Migrated(b)
	log, err := eventlog.New(db, nil)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)
	for i := 0; i < benchEvents; i += 5000 {
		entries := make([]eventlog.Entry, 5000)
		for j := range entries {
			entries[j] = eventlog.Entry{Kind: eventlog.KindAgentEvent, TS: t0.Add(time.Duration(i+j) * time.Millisecond),
				HostID: "host-" + strconv.Itoa((i+j)%500), RolloutID: "r-1", Payload: benchPayload(i + j)}
		}
		if _, err := log.AppendBatch(ctx, entries); err != nil {
			b.Fatal(err)
		}
	}
	_, js := natstest.Connect(b, natstest.Server(b))
	run := 0
	newStream := func() (string, jetstream.Stream) {
		run++
		name := "B" + strconv.Itoa(run)
		return name, natstest.Stream(b, js, name, fmt.Sprintf("b%d.>", run))
	}
	wait := func(s jetstream.Stream) {
		for {
			info, err := s.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.State.Msgs >= benchEvents {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	for _, page := range []int{500, 1000, 2000, 5000} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			var elapsed time.Duration
			for range b.N {
				name, s := newStream()
				f, err := natsforward.New(log, js, &natsforward.Config{Name: "bench_b" + name[1:], Stream: name,
					Subject: "b" + name[1:] + ".{kind}.{host}", PageSize: page, Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				rctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				start := time.Now()
				go func() { done <- f.Run(rctx) }()
				wait(s)
				elapsed += time.Since(start)
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(benchEvents*b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(0, "ns/op")
		})
	}

	// The baseline: the same payloads published straight to JetStream,
	// pipelined by 1000 with every acknowledgement awaited.
	b.Run("raw_publish", func(b *testing.B) {
		var elapsed time.Duration
		for range b.N {
			name, s := newStream()
			subject := "b" + name[1:] + ".agent_event.host"
			start := time.Now()
			for i := 0; i < benchEvents; i += 1000 {
				futures := make([]jetstream.PubAckFuture, 0, 1000)
				for j := i; j < i+1000; j++ {
					m := &nats.Msg{Subject: subject, Data: benchPayload(j), Header: nats.Header{}}
					m.Header.Set(jetstream.MsgIDHeader, "canonlog-"+strconv.Itoa(j))
					fut, err := js.PublishMsgAsync(m)
					if err != nil {
						b.Fatal(err)
					}
					futures = append(futures, fut)
				}
				for _, fut := range futures {
					select {
					case <-fut.Ok():
					case err := <-fut.Err():
						b.Fatal(err)
					}
				}
			}
			elapsed += time.Since(start)
			wait(s)
		}
		b.ReportMetric(float64(benchEvents*b.N)/elapsed.Seconds(), "events/s")
		b.ReportMetric(0, "ns/op")
	})
}
