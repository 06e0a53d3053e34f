package app_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/metrictest"
)

// TestModuleTelemetry: the metric.MeterProvider and trace.TracerProvider
// in the graph are the ones the module's log and manager record through;
// without them the module works as ever.
func TestModuleTelemetry(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		t.Run("records_through_the_providers_in_the_graph", func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			reader := sdkmetric.NewManualReader()
			meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			spans := tracetest.NewSpanRecorder()
			tracers := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			a, s := setup(t, app.Config{DatabaseURL: dbtest.New(t, backend).URL},
				fx.Provide(func() metric.MeterProvider { return meters }),
				fx.Provide(func() trace.TracerProvider { return tracers }),
			)
			a.RequireStart()
			defer a.RequireStop()
			require.Same(t, meters, s.Log.MeterProvider(), "the log's consumers record through it too")
			require.Same(t, tracers, s.Log.TracerProvider())

			parentCtx, parent := tracers.Tracer("test").Start(ctx, "request")
			for _, id := range []string{"web-1/1", "web-2/1", "web-1/1"} {
				_, err := s.Log.Append(parentCtx, probeResult(id[:5], "r-1", "CIS-5.2.1", id))
				require.NoError(t, err)
			}
			parent.End()

			got := metrictest.Collect(t, reader)
			events := got["canonlog.append.events"]
			require.Equal(t, int64(2), metrictest.Sum(events, attribute.String("canonlog.append.operation", "single"), attribute.String("canonlog.event.result", "stored")))
			require.Equal(t, int64(1), metrictest.Sum(events, attribute.String("canonlog.append.operation", "single"), attribute.String("canonlog.event.result", "duplicate")))
			require.Contains(t, got, "canonlog.projection.apply.duration", "the manager's metrics too")

			var appends int
			for _, sp := range spans.Ended() {
				if sp.Name() == "INSERT event_log" {
					appends++
					require.Equal(t, parent.SpanContext().SpanID(), sp.Parent().SpanID(), "the caller's span is the parent")
				}
			}
			require.Equal(t, 3, appends)
		})

		t.Run("records_through_prometheus_module", func(t *testing.T) {
			t.Parallel()
			var handler app.MetricsHandler
			a, s := setup(t, app.Config{DatabaseURL: dbtest.New(t, backend).URL}, app.PrometheusModule, fx.Populate(&handler))
			a.RequireStart()
			defer a.RequireStop()
			_, err := s.Log.Append(context.Background(), probeResult("web-1", "r-1", "CIS-5.2.1", "web-1/1"))
			require.NoError(t, err)
			body := scrape(t, handler)
			require.Regexp(t, `(?m)^canonlog_append_events_total\{(?:[^}]*,)?canonlog_append_operation="single",canonlog_event_result="stored",[^}]*\} 1$`, body)
			require.Contains(t, body, "canonlog_append_duration_seconds_bucket{")
		})

		t.Run("without_providers_records_nothing_and_works", func(t *testing.T) {
			t.Parallel()
			a, s := setup(t, app.Config{DatabaseURL: dbtest.New(t, backend).URL})
			a.RequireStart()
			defer a.RequireStop()
			res, err := s.Log.Append(context.Background(), probeResult("web-1", "r-1", "CIS-5.2.1", "web-1/1"))
			require.NoError(t, err)
			require.Positive(t, res.Event.Seq)
		})
	})
}
