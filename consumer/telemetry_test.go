package consumer_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// A consumer of a log with providers records its handler calls, the
// events it handled and parked, its retries, and while it runs its
// position and lag; each handler call is a span.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		reader := sdkmetric.NewManualReader()
		spans := tracetest.NewSpanRecorder()
		db := dbtest.New(t, backend).Migrated(t)
		log, err := eventlog.New(db, &eventlog.Config{
			MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
			TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = log.Close() })

		for _, p := range []string{`{}`, `{}`, `{"poison":1}`, `{}`} {
			_, err := log.Append(ctx, agent("h", p))
			require.NoError(t, err)
		}
		head, err := log.LastSeq(ctx)
		require.NoError(t, err)
		var handled atomic.Int64
		c, err := consumer.New(log, &consumer.Config{
			Name: "metered", Kinds: []eventlog.Kind{eventlog.KindAgentEvent}, PageSize: 2,
			HandleTx: func(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
				for _, ev := range events {
					if string(ev.Payload) == `{"poison":1}` {
						return errPoisonMetered
					}
				}
				handled.Add(int64(len(events)))
				return nil
			},
			Attempts: 3, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
			OnFailure: consumer.FailPark, Logger: quiet,
		})
		require.NoError(t, err)
		stop := running(t, c)

		name := attribute.String("canonlog.consumer.name", "metered")
		var m map[string]metricdata.Metrics
		waitUntil(t, "the consumer's position at the head", func() bool {
			m = collectMetrics(t, reader)
			pos, ok := m["canonlog.consumer.position"]
			return ok && gaugeOf(pos, name) == head
		})
		require.Equal(t, int64(0), gaugeOf(m["canonlog.consumer.lag"], name))
		require.Equal(t, int64(3), handled.Load())
		events := m["canonlog.consumer.events"]
		require.Equal(t, int64(3), sumOf(events, name, attribute.String("canonlog.event.result", "handled")))
		require.Equal(t, int64(1), sumOf(events, name, attribute.String("canonlog.event.result", "parked")))
		// The page of 2 holding the poison fails once, then the poison alone
		// 3 times: the retries are the attempts that were tried again.
		require.Equal(t, int64(2), sumOf(m["canonlog.consumer.retries"], name))
		require.NotZero(t, histCount(m["canonlog.consumer.handle.duration"], name, attribute.String("canonlog.consumer.outcome", "error")))
		require.NotZero(t, histCount(m["canonlog.consumer.handle.duration"], name, attribute.String("canonlog.consumer.outcome", "ok")))
		var handleSpans int
		for _, s := range spans.Ended() {
			if s.Name() == "canonlog.consumer.handle" {
				handleSpans++
			}
		}
		require.NotZero(t, handleSpans)

		// A stopped consumer reports no position.
		require.NoError(t, stop())
		m = collectMetrics(t, reader)
		if pos, ok := m["canonlog.consumer.position"]; ok {
			require.Empty(t, pos.Data.(metricdata.Gauge[int64]).DataPoints)
		}
	})
}

var errPoisonMetered = errors.New("poisoned")

func collectMetrics(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func gaugeOf(m metricdata.Metrics, attrs ...attribute.KeyValue) int64 {
	want := attribute.NewSet(attrs...)
	for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	return -1
}

func sumOf(m metricdata.Metrics, attrs ...attribute.KeyValue) int64 {
	want := attribute.NewSet(attrs...)
	if m.Data == nil {
		return 0
	}
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	return 0
}

func histCount(m metricdata.Metrics, attrs ...attribute.KeyValue) uint64 {
	want := attribute.NewSet(attrs...)
	for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Count
		}
	}
	return 0
}
