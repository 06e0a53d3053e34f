package eventlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/migrations"
)

func Example() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		panic(err)
	}
	clock := eventlogtest.NewFakeClock(time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC))
	log, err := eventlog.New(db, &eventlog.Config{Clock: clock})
	if err != nil {
		panic(err)
	}

	e := eventlog.Entry{
		Kind:      eventlog.KindAgentEvent,
		HostID:    "host-1",
		RolloutID: "rollout-7",
		Payload:   json.RawMessage(`{"type": "Heartbeat"}`),
		EventID:   "host-1/1",
	}
	first, _ := log.Append(ctx, e)
	retry, _ := log.Append(ctx, e) // a retry lands nothing new
	fmt.Println(first.Event.Seq, first.Duplicate, first.Event.TS.Format(time.RFC3339))
	fmt.Println(retry.Event.Seq, retry.Duplicate)

	events, _ := log.Query(ctx, eventlog.Filter{HostID: "host-1"})
	fmt.Println(len(events), string(events[0].Payload))
	// Output:
	// 1 false 2026-05-16T01:00:00Z
	// 1 true
	// 1 {"type": "Heartbeat"}
}

// The log on its own, as the README shows it: open, migrate, append, read.
func Example_appendAndRead() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:") // or "postgres://postgres@127.0.0.1:5432/app?sslmode=disable"
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		panic(err)
	}

	log, err := eventlog.New(db, nil) // *eventlog.Config: clock, payload limit, hook, serialized appends
	if err != nil {
		panic(err)
	}

	res, err := log.Append(ctx, eventlog.Entry{
		Kind:      eventlog.KindAgentEvent,
		HostID:    "host-17",
		RolloutID: "rollout-2026-05-16",
		Payload:   json.RawMessage(`{"type":"ProbeResult","status":"pass"}`),
		EventID:   "host-17/probe/9121", // retrying with the same id lands nothing new
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("seq", res.Event.Seq, "duplicate", res.Duplicate)

	events, err := log.Query(ctx, eventlog.Filter{HostID: "host-17", Limit: 100})
	if err != nil {
		panic(err)
	}
	fmt.Println(len(events), "event of host-17:", events[0].EventID)
	for page, err := range log.Pages(ctx, 0, nil) { // the whole log, in bounded memory
		if err != nil {
			panic(err)
		}
		fmt.Println("a page from seq", page[0].Seq, "to", page[len(page)-1].Seq)
	}
	// Output:
	// seq 1 duplicate false
	// 1 event of host-17: host-17/probe/9121
	// a page from seq 1 to 1
}

// The read–decide–append loop: read what the decision depends on, decide,
// and append the decision only if nothing relevant was appended since.
func ExampleLog_If() {
	ctx := context.Background()
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

	// What the decision depends on: agent events of rollout r7.
	match := eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindAgentEvent}, RolloutID: "r7"}
	var seen []eventlog.Event
	cond, err := log.ReadForCondition(ctx, match, func(ctx context.Context, tx *sqlx.Tx) error {
		seen, err = log.QueryTx(ctx, tx, match) // complete up to cond.AfterSeq
		return err
	})
	if err != nil {
		panic(err)
	}
	decision := eventlog.Entry{Kind: eventlog.KindGateDecision, RolloutID: "r7",
		Payload: json.RawMessage(`{"decision":"advance","wave":2}`), EventID: "r7/gate/wave-2"}

	// Meanwhile an agent of r7 reports.
	report, _ := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "web-1", RolloutID: "r7",
		Payload: json.RawMessage(`{"type":"ProbeResult","status":"fail"}`)})

	_, err = log.If(cond).Append(ctx, decision)
	var conflict *eventlog.ConditionError
	if errors.As(err, &conflict) {
		// Read again, decide again.
		fmt.Println("read", len(seen), "events; event", conflict.Seq, "came after seq", cond.AfterSeq)
	}
	fmt.Println(conflict.Seq == report.Event.Seq)
	// Output:
	// read 0 events; event 1 came after seq 0
	// true
}

// A log with OpenTelemetry providers records its appends.
func Example_telemetry() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		panic(err)
	}

	reader := sdkmetric.NewManualReader() // or a Prometheus exporter, or a periodic OTLP reader
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tracers := sdktrace.NewTracerProvider() // sdktrace.WithBatcher(exporter) ships the spans
	log, err := eventlog.New(db, &eventlog.Config{MeterProvider: meters, TracerProvider: tracers})
	if err != nil {
		panic(err)
	}

	e := eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{}`), EventID: "effect-1"}
	_, _ = log.Append(ctx, e)
	_, _ = log.Append(ctx, e) // a retry: a duplicate

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == "canonlog.append.events" {
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				result, _ := dp.Attributes.Value("canonlog.event.result")
				fmt.Println(m.Name, result.AsString(), dp.Value)
			}
		}
	}
	// Unordered output:
	// canonlog.append.events stored 1
	// canonlog.append.events duplicate 1
}
