package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// recorder is a slog.Handler that keeps every record, DEBUG included,
// and passes it on to the test's output.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
	out     slog.Handler
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{out: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})}
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(ctx context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.records = append(r.records, rec.Clone())
	r.mu.Unlock()
	return r.out.Handle(ctx, rec)
}

// fleetd's loggers add no attributes or groups of their own.
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// requestLine is a "fleetd: request" record, its attributes by key.
type requestLine struct {
	level slog.Level
	attrs map[string]slog.Value
}

// requests returns the request lines logged so far, in order.
func (r *recorder) requests() []requestLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []requestLine
	for _, rec := range r.records {
		if rec.Message != "fleetd: request" {
			continue
		}
		line := requestLine{level: rec.Level, attrs: map[string]slog.Value{}}
		rec.Attrs(func(a slog.Attr) bool {
			line.attrs[a.Key] = a.Value
			return true
		})
		out = append(out, line)
	}
	return out
}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		out = append(out, rec.Message)
	}
	return out
}

// get sends a GET and returns the status, the Content-Type and the body.
func (c *client) get(path string, header http.Header) (int, string, string) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.srv.URL+path, nil)
	require.NoError(c.t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.srv.Client().Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// TestObservability: fleetd's /metrics, its request log lines, the trace
// context it takes from requests, and its shutdown line.
func TestObservability(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		t.Run("metrics_pass_promlint", func(t *testing.T) {
			t.Parallel()
			f := setupService(t, backend, Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
			c := newClient(t, f.handler)
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", probeBody("web-1", "r-1", "web-1/1", "CIS-1"), nil))
			require.Equal(t, http.StatusOK, c.do("POST", "/v1/agent-events", probeBody("web-1", "r-1", "web-1/1", "CIS-1"), nil), "a retry")
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", probeBody("web-2", "r-1", "web-2/1", "CIS-1"), nil))
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-1/summary", "", nil))

			status, contentType, body := c.get("/metrics", nil)
			require.Equal(t, http.StatusOK, status, body)
			require.True(t, strings.HasPrefix(contentType, "text/plain; version=0.0.4"), contentType)
			problems, err := promlint.New(strings.NewReader(body)).Lint()
			require.NoError(t, err)
			require.Empty(t, problems, body)

			require.Contains(t, body, "# TYPE http_server_request_duration_seconds histogram")
			require.Regexp(t, `(?m)^http_server_request_duration_seconds_count\{(?:[^}]*,)?http_request_method="POST",http_response_status_code="201",http_route="/v1/agent-events",[^}]*\} 2$`, body)
			require.Regexp(t, `(?m)^http_server_request_duration_seconds_count\{(?:[^}]*,)?http_request_method="POST",http_response_status_code="200",http_route="/v1/agent-events",[^}]*\} 1$`, body)
			require.Contains(t, body, `http_route="/v1/rollouts/{id}/summary"`)
			require.Regexp(t, `(?m)^canonlog_append_events_total\{(?:[^}]*,)?canonlog_append_operation="single",canonlog_event_result="stored",[^}]*\} 2$`, body, "the log's metrics")
			require.Regexp(t, `(?m)^canonlog_append_events_total\{(?:[^}]*,)?canonlog_append_operation="single",canonlog_event_result="duplicate",[^}]*\} 1$`, body)
			require.NotContains(t, body, "r-1", "a rollout id is never a label")
			require.NotContains(t, body, "web-1", "nor a host id")
			require.Contains(t, body, "go_goroutines ")
		})

		t.Run("logs_each_request", func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			f := setupService(t, backend, Config{Logger: slog.New(rec)})
			c := newClient(t, f.handler)
			require.Equal(t, http.StatusCreated, c.do("POST", "/v1/agent-events", probeBody("web-1", "r-7", "web-1/1", "CIS-1"), nil))
			require.Equal(t, http.StatusOK, c.do("GET", "/v1/rollouts/r-7/hosts?limit=5", "", nil))
			require.Equal(t, http.StatusBadRequest, c.do("POST", "/v1/agent-events", `{`, nil))
			require.Equal(t, http.StatusOK, c.do("GET", "/healthz", "", nil))
			status, _, _ := c.get("/v2/nothing/here", nil)
			require.Equal(t, http.StatusNotFound, status)

			lines := rec.requests()
			require.Len(t, lines, 5)
			type logged struct {
				level  slog.Level
				method string
				route  string
				status int64
			}
			var got []logged
			for _, l := range lines {
				got = append(got, logged{l.level, l.attrs["method"].String(), l.attrs["route"].String(), l.attrs["status"].Int64()})
				require.Equal(t, slog.KindDuration, l.attrs["duration"].Kind())
				require.GreaterOrEqual(t, l.attrs["duration"].Duration(), time.Duration(0))
				require.NotContains(t, l.attrs, "trace_id", "no TracerProvider: nothing traced")
				for k, v := range l.attrs {
					require.NotContains(t, v.String(), "r-7", "%s: the route, never the path with its ids", k)
				}
			}
			require.Equal(t, []logged{
				{slog.LevelInfo, "POST", "/v1/agent-events", 201},
				{slog.LevelInfo, "GET", "/v1/rollouts/{id}/hosts", 200},
				{slog.LevelInfo, "POST", "/v1/agent-events", 400},
				{slog.LevelDebug, "GET", "/healthz", 200},
				{slog.LevelInfo, "GET", "", 404},
			}, got)
		})

		t.Run("traceparent_is_the_parent", func(t *testing.T) {
			t.Parallel()
			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
			rec := newRecorder(t)
			f := setupService(t, backend, Config{Logger: slog.New(rec), TracerProvider: tp})
			c := newClient(t, f.handler)

			const (
				traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
				spanID  = "00f067aa0ba902b7"
			)
			req, err := http.NewRequest(http.MethodPost, c.srv.URL+"/v1/agent-events", strings.NewReader(probeBody("web-1", "r-1", "web-1/1", "CIS-1")))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("traceparent", "00-"+traceID+"-"+spanID+"-01")
			resp, err := c.srv.Client().Do(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusCreated, resp.StatusCode)

			ended := spans.Ended()
			i := slices.IndexFunc(ended, func(s sdktrace.ReadOnlySpan) bool { return s.SpanKind() == trace.SpanKindServer })
			require.GreaterOrEqual(t, i, 0, "a server span")
			server := ended[i]
			require.Equal(t, "POST /v1/agent-events", server.Name())
			require.Equal(t, traceID, server.SpanContext().TraceID().String(), "the caller's trace")
			require.Equal(t, spanID, server.Parent().SpanID().String(), "the caller's span is the parent")
			require.True(t, server.Parent().IsRemote())
			attrs := map[string]string{}
			for _, kv := range server.Attributes() {
				attrs[string(kv.Key)] = kv.Value.String()
			}
			require.Equal(t, "POST", attrs["http.request.method"])
			require.Equal(t, "/v1/agent-events", attrs["http.route"])
			require.Equal(t, "201", attrs["http.response.status_code"])
			// The log's append span, started in the handler, is the server
			// span's child: the whole request is one trace.
			i = slices.IndexFunc(ended, func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "INSERT event_log" })
			require.GreaterOrEqual(t, i, 0, "the log's append span")
			require.Equal(t, traceID, ended[i].SpanContext().TraceID().String())
			require.Equal(t, server.SpanContext().SpanID(), ended[i].Parent().SpanID())

			lines := rec.requests()
			require.Len(t, lines, 1)
			require.Equal(t, traceID, lines[0].attrs["trace_id"].String(), "the request line names the trace")
		})

		t.Run("logs_its_shutdown", func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			f := setupService(t, backend, Config{Logger: slog.New(rec)})
			require.NotContains(t, rec.messages(), "fleetd: shutting down the HTTP server: no new requests, waiting for those in flight")
			f.app.RequireStop()
			require.Contains(t, rec.messages(), "fleetd: shutting down the HTTP server: no new requests, waiting for those in flight")
		})
	})
}
