package eventlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/metrictest"
)

// A log with providers records every append call: its duration by
// operation and outcome, the entries stored and found duplicate, the
// batch sizes, the head; and traces each call as a client span, child of
// the caller's, with the database attributes.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		reader := sdkmetric.NewManualReader()
		meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		spans := tracetest.NewSpanRecorder()
		tracers := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		log, db := setup(t, backend, &eventlog.Config{MeterProvider: meters, TracerProvider: tracers})

		// 10 single appends, of which 2 are retries; 1 refused entry; 1
		// event id reused with other content; 1 batch of 3; 1 AppendTx
		// of 2; 1 failed condition.
		for i := range 8 {
			_, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "r1", `{}`, "e"+string(rune('a'+i))))
			require.NoError(t, err)
		}
		for range 2 {
			res, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "r1", `{}`, "ea"))
			require.NoError(t, err)
			require.True(t, res.Duplicate)
		}
		_, err := log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "r1", `{`, ""))
		require.ErrorIs(t, err, eventlog.ErrInvalidPayload)
		_, err = log.Append(ctx, rolloutEvent(eventlog.KindAgentEvent, "h1", "r1", `{"other":1}`, "ea"))
		require.ErrorIs(t, err, eventlog.ErrEventIDConflict)
		parent, root := tracers.Tracer("test").Start(ctx, "request")
		_, err = log.AppendBatch(parent, []eventlog.Entry{entry("h2", `{}`), entry("h3", `{}`), entry("h4", `{}`)})
		require.NoError(t, err)
		root.End()
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		_, err = log.AppendTx(ctx, tx, entry("h5", `{}`), entry("h6", `{}`))
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		_, err = log.If(eventlog.Condition{Match: eventlog.Filter{RolloutID: "r1"}}).Append(ctx,
			rolloutEvent(eventlog.KindGateDecision, "", "r1", `{}`, "g1"))
		require.ErrorIs(t, err, eventlog.ErrConditionFailed)

		op := func(v string) attribute.KeyValue { return attribute.String("canonlog.append.operation", v) }
		outcome := func(v string) attribute.KeyValue { return attribute.String("canonlog.append.outcome", v) }
		result := func(v string) attribute.KeyValue { return attribute.String("canonlog.event.result", v) }
		m := metrictest.Collect(t, reader)
		events := m["canonlog.append.events"]
		require.Equal(t, int64(8), metrictest.Sum(events, op("single"), result("stored")))
		require.Equal(t, int64(2), metrictest.Sum(events, op("single"), result("duplicate")))
		require.Equal(t, int64(3), metrictest.Sum(events, op("batch"), result("stored")))
		require.Equal(t, int64(2), metrictest.Sum(events, op("tx"), result("stored")))
		duration := m["canonlog.append.duration"]
		require.Equal(t, "s", duration.Unit)
		require.Equal(t, uint64(8), metrictest.Count(duration, op("single"), outcome("ok")))
		require.Equal(t, uint64(2), metrictest.Count(duration, op("single"), outcome("duplicate")))
		require.Equal(t, uint64(1), metrictest.Count(duration, op("single"), outcome("invalid")))
		require.Equal(t, uint64(2), metrictest.Count(duration, op("single"), outcome("conflict")), "the reused event id and the failed condition")
		require.Equal(t, uint64(1), metrictest.Count(duration, op("batch"), outcome("ok")))
		require.Equal(t, uint64(1), metrictest.Count(duration, op("tx"), outcome("ok")))
		size := m["canonlog.append.batch.size"]
		require.Equal(t, uint64(13), metrictest.Count(size, op("single")))
		sizes := map[string]int64{}
		for _, dp := range size.Data.(metricdata.Histogram[int64]).DataPoints {
			v, _ := dp.Attributes.Value("canonlog.append.operation")
			sizes[v.AsString()] = dp.Sum
		}
		require.Equal(t, map[string]int64{"single": 13, "batch": 3, "tx": 2}, sizes, "entries per operation")
		head := m["canonlog.log.head"].Data.(metricdata.Gauge[int64]).DataPoints
		require.Len(t, head, 1)
		last, err := log.LastSeq(ctx)
		require.NoError(t, err)
		require.Equal(t, last, head[0].Value)

		ended := spans.Ended()
		require.Len(t, ended, 16, "one span per append call (15), and the caller's")
		var batch sdktrace.ReadOnlySpan
		for _, s := range ended {
			if s.Name() == "INSERT event_log" && attrOf(s, "canonlog.append.operation") == "batch" {
				batch = s
			}
		}
		require.NotNil(t, batch)
		require.Equal(t, root.SpanContext().SpanID(), batch.Parent().SpanID(), "the caller's span is the parent")
		require.Equal(t, "3", attrOf(batch, "db.operation.batch.size"))
		system, namespace := "sqlite", "main"
		if backend == "postgres" {
			var schema, database string
			require.NoError(t, db.QueryRowx(`SELECT current_database(), current_schema()`).Scan(&database, &schema))
			system, namespace = "postgresql", database+"."+schema
		}
		require.Equal(t, system, attrOf(batch, "db.system.name"))
		require.Equal(t, namespace, attrOf(batch, "db.namespace"))
		require.Equal(t, "INSERT event_log", attrOf(batch, "db.query.summary"))
		require.Equal(t, "INSERT", attrOf(batch, "db.operation.name"))
		require.Equal(t, codes.Unset, batch.Status().Code)
	})
}

// A span of an append the database refused carries the SQLSTATE.
func TestTelemetryErrorSpan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	log, db := setup(t, "postgres", &eventlog.Config{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))})
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	_, err = tx.Exec(`SELECT 1/0`)
	require.Error(t, err)
	_, err = log.AppendTx(ctx, tx, eventlog.Entry{Kind: "k", Payload: json.RawMessage(`{}`)})
	require.Error(t, err)
	ended := spans.Ended()
	require.Len(t, ended, 1)
	require.Equal(t, codes.Error, ended[0].Status().Code)
	require.Equal(t, "25P02", attrOf(ended[0], "db.response.status_code"), "in a failed transaction")
	require.Equal(t, "error", attrOf(ended[0], "error.type"))
}

func attrOf(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return fmt.Sprint(kv.Value.AsInterface())
		}
	}
	return ""
}

// On PostgreSQL the log reports how long the transaction holding
// followers back has run: at least as long as one held open.
func TestTelemetryHorizon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	_, db := setup(t, "postgres", &eventlog.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	tx, err := db.BeginTxx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	_, err = tx.Exec(`SELECT pg_current_xact_id()`) // takes a transaction id: a follower's horizon
	require.NoError(t, err)
	const held = 50 * time.Millisecond
	time.Sleep(held)
	age := func() float64 {
		points := metrictest.Collect(t, reader)["canonlog.log.horizon.age"].Data.(metricdata.Gauge[float64]).DataPoints
		require.Len(t, points, 1)
		return points[0].Value
	}
	require.GreaterOrEqual(t, age(), held.Seconds(), "the oldest transaction in progress is at least as old as this one")
	// Other tests' transactions may be older and end meanwhile: only the
	// bound that this one sets is certain, and it grows.
	time.Sleep(held)
	require.GreaterOrEqual(t, age(), 2*held.Seconds())
}

// A named follower reports its position and lag while Events runs.
func TestTelemetryFollower(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		reader := sdkmetric.NewManualReader()
		log, _ := setup(t, backend, &eventlog.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
		var seqs []int64
		for _, k := range []eventlog.Kind{eventlog.KindEffect, eventlog.KindPlanAction, eventlog.KindEffect, eventlog.KindEffect} {
			res, err := log.Append(ctx, eventlog.Entry{Kind: k, Payload: json.RawMessage(`{}`)})
			require.NoError(t, err)
			seqs = append(seqs, res.Event.Seq)
		}
		name := attribute.String("canonlog.follower.name", "tail")
		gauge := func(m map[string]metricdata.Metrics, metric string) (float64, bool) {
			return metrictest.Gauge(m[metric], name)
		}
		followCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		n := 0
		for ev, err := range log.Follow(followCtx, eventlog.Position{}, &eventlog.FollowOptions{
			Name: "tail", Filter: eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindEffect}}}) {
			require.NoError(t, err)
			if n++; n < 2 {
				continue
			}
			// The second effect (seq 3) was yielded; the next effect is 4.
			require.Equal(t, seqs[2], ev.Seq)
			m := metrictest.Collect(t, reader)
			pos, ok := gauge(m, "canonlog.follower.position")
			require.True(t, ok)
			require.Equal(t, float64(seqs[2]), pos)
			lag, _ := gauge(m, "canonlog.follower.lag")
			require.Equal(t, float64(seqs[3]-seqs[2]), lag)
			age, _ := gauge(m, "canonlog.follower.lag.age")
			require.Greater(t, age, 0.0, "the next effect was stamped by the fake clock, in the past")
			break
		}
		_, ok := gauge(metrictest.Collect(t, reader), "canonlog.follower.position")
		require.False(t, ok, "a follower that stopped reports nothing")

		_, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{Name: string(make([]byte, 64))})
		require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
	})
}

// The API's no-op providers are taken for none: nothing is built to
// record into them.
func TestTelemetryNoop(t *testing.T) {
	t.Parallel()
	log, _ := setup(t, "sqlite", &eventlog.Config{MeterProvider: metricnoop.NewMeterProvider(), TracerProvider: tracenoop.NewTracerProvider()})
	require.Nil(t, log.MeterProvider())
	require.Nil(t, log.TracerProvider())
	meters := sdkmetric.NewMeterProvider()
	log, _ = setup(t, "sqlite", &eventlog.Config{MeterProvider: meters})
	require.Equal(t, meters, log.MeterProvider())
}
