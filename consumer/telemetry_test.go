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
	"github.com/canonlog/canonlog/internal/metrictest"
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
			m = metrictest.Collect(t, reader)
			pos, ok := m["canonlog.consumer.position"]
			v, found := metrictest.Gauge(pos, name)
			return ok && found && v == float64(head)
		})
		lag, _ := metrictest.Gauge(m["canonlog.consumer.lag"], name)
		require.Equal(t, 0.0, lag)
		require.Equal(t, int64(3), handled.Load())
		events := m["canonlog.consumer.events"]
		require.Equal(t, int64(3), metrictest.Sum(events, name, attribute.String("canonlog.event.result", "handled")))
		require.Equal(t, int64(1), metrictest.Sum(events, name, attribute.String("canonlog.event.result", "parked")))
		// The page of 2 holding the poison fails once, then the poison alone
		// 3 times: the retries are the attempts that were tried again.
		require.Equal(t, int64(2), metrictest.Sum(m["canonlog.consumer.retries"], name))
		require.NotZero(t, metrictest.Count(m["canonlog.consumer.handle.duration"], name, attribute.String("canonlog.consumer.outcome", "error")))
		require.NotZero(t, metrictest.Count(m["canonlog.consumer.handle.duration"], name, attribute.String("canonlog.consumer.outcome", "ok")))
		var handleSpans int
		for _, s := range spans.Ended() {
			if s.Name() == "canonlog.consumer.handle" {
				handleSpans++
			}
		}
		require.NotZero(t, handleSpans)

		// A stopped consumer reports no position.
		require.NoError(t, stop())
		m = metrictest.Collect(t, reader)
		if pos, ok := m["canonlog.consumer.position"]; ok {
			require.Empty(t, pos.Data.(metricdata.Gauge[int64]).DataPoints)
		}
	})
}

var errPoisonMetered = errors.New("poisoned")
