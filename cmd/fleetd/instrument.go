package main

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// instrumentationName names fleetd's meter and tracer (the
// otel_scope_name of its metrics).
const instrumentationName = "github.com/canonlog/canonlog/cmd/fleetd"

// requestDurationBuckets are OpenTelemetry's advised boundaries for
// http.server.request.duration, in seconds.
var requestDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// probeRoutes are polled by monitoring every few seconds: their request
// lines go to DEBUG so that they do not drown the others.
var probeRoutes = map[string]bool{"GET /healthz": true, "GET /metrics": true}

// instrumented serves fleetd's routes and, for every request, logs a
// line, records its duration, and — with a TracerProvider — traces it
// in a server span, the child of the W3C trace context (traceparent) the
// request carries, so that the spans the handler starts (the log's
// append) belong to the caller's trace.
type instrumented struct {
	// mux serves the request and sets its Pattern, the route.
	mux        http.Handler
	logger     *slog.Logger
	duration   metric.Float64Histogram
	tracer     trace.Tracer // nil: nothing is traced
	propagator propagation.TextMapPropagator
}

func newInstrumented(mux http.Handler, logger *slog.Logger, mp metric.MeterProvider, tp trace.TracerProvider) (*instrumented, error) {
	h := &instrumented{mux: mux, logger: logger}
	var err error
	h.duration, err = mp.Meter(instrumentationName).Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of the HTTP requests fleetd served."),
		metric.WithExplicitBucketBoundaries(requestDurationBuckets...))
	if err != nil {
		return nil, err
	}
	if tp != nil {
		h.tracer = tp.Tracer(instrumentationName)
		h.propagator = propagation.TraceContext{}
	}
	return h, nil
}

func (h *instrumented) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	method := knownMethod(r.Method)
	var span trace.Span
	if h.tracer != nil {
		ctx := h.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span = h.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(semconv.HTTPRequestMethodKey.String(method), semconv.URLPath(r.URL.Path)))
		defer span.End()
		r = r.WithContext(ctx)
	}
	sw := &statusWriter{ResponseWriter: w}
	h.mux.ServeHTTP(sw, r)
	elapsed := time.Since(began)
	status := sw.status
	if status == 0 {
		status = http.StatusOK // the handler wrote nothing
	}

	// The mux sets the pattern it matched on the request it served: its
	// path part is the route, bounded, unlike the path with its ids.
	_, route, _ := strings.Cut(r.Pattern, " ")
	attrs := []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(method), semconv.HTTPResponseStatusCode(status)}
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	h.duration.Record(r.Context(), elapsed.Seconds(), metric.WithAttributes(attrs...))
	if span != nil {
		if route != "" {
			span.SetName(method + " " + route)
		}
		span.SetAttributes(attrs...)
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	}

	level := slog.LevelInfo
	if probeRoutes[r.Pattern] {
		level = slog.LevelDebug
	}
	logAttrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Duration("duration", elapsed),
	}
	if span != nil && span.SpanContext().IsValid() {
		logAttrs = append(logAttrs, slog.String("trace_id", span.SpanContext().TraceID().String()))
	}
	h.logger.LogAttrs(r.Context(), level, "fleetd: request", logAttrs...)
}

// knownMethod is the request's method when it is a standard one, else
// "_OTHER" (OpenTelemetry's rule): a client must not be able to add
// series by inventing methods.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
