package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// fleetd serve --otlp-traces-endpoint sends the spans of the requests it
// served, and of their appends, to an OpenTelemetry collector over
// OTLP/HTTP; the last batch goes out on stop.
func TestServeSendsTraces(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		bodies [][]byte
		types  []string
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if r.URL.Path == "/v1/traces" {
			bodies, types = append(bodies, b), append(types, r.Header.Get("Content-Type"))
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()

	url := dbtest.New(t, "sqlite").URL
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, stderr, done := serving(t, ctx, "serve", "--addr", "127.0.0.1:0", "--database-url", url,
		"--otlp-traces-endpoint", collector.URL+"/v1/traces")

	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/agent-events",
		strings.NewReader(`{"host_id":"web-1","event_id":"web-1/1","payload":{"type":"Heartbeat"}}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	cancel()
	select {
	case code := <-done:
		require.Equal(t, exitOK, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("fleetd did not stop")
	}
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, bodies, "the spans reached the collector")
	all := strings.Join(func() []string {
		out := make([]string, len(bodies))
		for i, b := range bodies {
			out[i] = string(b)
		}
		return out
	}(), "")
	require.Equal(t, "application/x-protobuf", types[0])
	// The protobuf holds the names and the incoming trace id as bytes.
	require.Contains(t, all, "INSERT event_log")
	require.Contains(t, all, "fleetd")
	require.Contains(t, all, string([]byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6}), "the request's trace continues")
}
