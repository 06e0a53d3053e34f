package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
)

// heartbeat is an agent event no projection of these examples consumes.
func heartbeat(eventID string) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "web-1", EventID: eventID, Payload: json.RawMessage(`{"type":"Heartbeat"}`)}
}

// PrometheusModule sets up the metrics SDK with a Prometheus exporter:
// the module's log records through its metric.MeterProvider, and its
// app.MetricsHandler serves them in the Prometheus text format.
func ExamplePrometheusModule() {
	var log *eventlog.Log
	mux := http.NewServeMux()
	a := fx.New(
		fx.NopLogger,
		fx.Supply(app.Config{DatabaseURL: "sqlite::memory:"}),
		app.PrometheusModule, // metric.MeterProvider, *prometheus.Registry, app.MetricsHandler
		app.Module,           // its log records through the metric.MeterProvider
		fx.Invoke(func(h app.MetricsHandler) { mux.Handle("GET /metrics", h) }),
		fx.Populate(&log),
	)
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = a.Stop(ctx) }()

	for _, id := range []string{"web-1/1", "web-1/2", "web-1/1"} {
		if _, err := log.Append(ctx, heartbeat(id)); err != nil {
			panic(err)
		}
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "canonlog_append_events_total{") {
			fmt.Println(sc.Text())
		}
	}
	// Output:
	// canonlog_append_events_total{canonlog_append_operation="single",canonlog_event_result="duplicate",otel_scope_name="github.com/canonlog/canonlog/eventlog",otel_scope_schema_url="",otel_scope_version=""} 1
	// canonlog_append_events_total{canonlog_append_operation="single",canonlog_event_result="stored",otel_scope_name="github.com/canonlog/canonlog/eventlog",otel_scope_schema_url="",otel_scope_version=""} 2
}

// A service that exports traces provides its SDK TracerProvider as a
// trace.TracerProvider, shut down on stop so that it flushes: the
// module's log traces every append as a child of the caller's span.
func Example_tracing() {
	spans := tracetest.NewSpanRecorder() // a service: sdktrace.WithBatcher(exporter)
	var (
		log    *eventlog.Log
		tracer trace.TracerProvider
	)
	a := fx.New(
		fx.NopLogger,
		fx.Supply(app.Config{DatabaseURL: "sqlite::memory:"}),
		fx.Provide(func(lc fx.Lifecycle) trace.TracerProvider {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			lc.Append(fx.StopHook(tp.Shutdown)) // after the log's stop: fx stops in reverse
			return tp
		}),
		app.Module,
		fx.Populate(&log, &tracer),
	)
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = a.Stop(ctx) }()

	reqCtx, req := tracer.Tracer("example").Start(ctx, "POST /v1/agent-events")
	if _, err := log.Append(reqCtx, heartbeat("web-1/1")); err != nil {
		panic(err)
	}
	req.End()
	for _, s := range spans.Ended() {
		if s.Parent().SpanID() == req.SpanContext().SpanID() {
			fmt.Println(s.Name(), "is a child of the request's span")
		}
	}
	// Output:
	// INSERT event_log is a child of the request's span
}
