package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// fleetd runs an HTTP server and database pools: nothing may outlive a
// stopped app. The binaries the end-to-end tests built go too.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBinaries()
		os.Exit(code)
	}))
}

// fixture is a started fleetd on a fresh database.
type fixture struct {
	app     *fxtest.App
	handler http.Handler
	server  *server
	log     *eventlog.Log
	db      *sqlx.DB
	clock   *eventlogtest.FakeClock
	url     string // the database's URL
}

var noConfig = app.Config{}

func dbURL(t *testing.T, f *fixture) string {
	t.Helper()
	require.NotEmpty(t, f.url)
	return f.url
}

var t0 = time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)

// setup starts fleetd's whole graph (HTTP server on a free port included)
// on a fresh database of backend; it stops when the test ends.
func setup(t *testing.T, backend string, canonlog app.Config) *fixture {
	t.Helper()
	return setupService(t, backend, Config{Canonlog: canonlog, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
}

// setupService is setup with the rest of fleetd's Config too (its
// logger, a TracerProvider); Addr and the database are the fixture's.
func setupService(t *testing.T, backend string, cfg Config) *fixture {
	t.Helper()
	b := dbtest.New(t, backend)
	f := &fixture{clock: eventlogtest.NewFakeClock(t0)}
	cfg.Addr = "127.0.0.1:0"
	cfg.Canonlog.DatabaseURL = b.URL
	f.url = b.URL
	cfg.Canonlog.Clock = f.clock
	f.app = fxtest.New(t, Options(cfg), fx.Populate(&f.handler, &f.server, &f.log, &f.db))
	f.app.RequireStart()
	t.Cleanup(f.app.RequireStop)
	return f
}

// client talks to a fixture's handler through an httptest server.
type client struct {
	t   *testing.T
	srv *httptest.Server
}

func newClient(t *testing.T, h http.Handler) *client {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &client{t: t, srv: srv}
}

// do sends a request and decodes the JSON answer into out (when not nil).
func (c *client) do(method, path, body string, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.srv.URL+path, strings.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.srv.Client().Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	require.Equal(c.t, "application/json", resp.Header.Get("Content-Type"), "%s %s → %s", method, path, raw)
	if out != nil {
		require.NoError(c.t, json.Unmarshal(raw, out), string(raw))
	}
	return resp.StatusCode
}

type posted struct {
	Seq       int64     `json:"seq"`
	TS        time.Time `json:"ts"`
	Duplicate bool      `json:"duplicate"`
	Error     string    `json:"error"`
	Field     string    `json:"field"`
}

// probeBody is a POST body reporting an enforce-mode probe failing controls.
func probeBody(host, rollout, eventID string, controls ...string) string {
	subs := make([]string, len(controls))
	for i, c := range controls {
		subs[i] = `{"control_id":"` + c + `","framework":"cis","status":"fail"}`
	}
	return `{"host_id":"` + host + `","rollout_id":"` + rollout + `","event_id":"` + eventID + `",` +
		`"payload":{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh-hardening","sub_results":[` + strings.Join(subs, ",") + `]}}`
}

func lastSeq(t *testing.T, log *eventlog.Log) int64 {
	t.Helper()
	seq, err := log.LastSeq(context.Background())
	require.NoError(t, err)
	return seq
}

func TestOptions(t *testing.T) {
	t.Parallel()
	require.NoError(t, fx.ValidateApp(fx.NopLogger, Options(Config{})))
}

// TestProjections: the service registers exactly the projections its
// operator commands operate, both from projections().
func TestProjections(t *testing.T) {
	t.Parallel()
	var want []string
	for _, p := range projections() {
		want = append(want, p.Name())
	}
	require.ElementsMatch(t, []string{"probe_failures", "rollout_progress"}, want)

	var reg *projection.Registry
	cfg := Config{Addr: "127.0.0.1:0", Canonlog: app.Config{DatabaseURL: "sqlite::memory:"}, Logger: slog.New(slog.DiscardHandler)}
	fxtest.New(t, Options(cfg), fx.Populate(&reg)).RequireStart().RequireStop()
	require.ElementsMatch(t, want, reg.Names())

	var names []string
	for _, p := range cliConfig(noEnv).Projections {
		names = append(names, p.Name())
	}
	require.ElementsMatch(t, want, names)
}

// TestService runs fleetd as main does, on a real port: listening on
// start, the API answering, and on stop the port released and the
// database closed.
func TestService(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		f := setup(t, backend, app.Config{})
		addr := f.server.Addr()
		require.NotEmpty(t, addr)
		hc := &http.Client{}
		defer hc.CloseIdleConnections()

		resp, err := hc.Post("http://"+addr+"/v1/agent-events", "application/json", strings.NewReader(probeBody("web-1", "r-1", "e-1", "CIS-1")))
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusCreated, resp.StatusCode)
		resp, err = hc.Get("http://" + addr + "/healthz")
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode)
		hc.CloseIdleConnections()

		f.app.RequireStop()
		_, err = net.DialTimeout("tcp", addr, time.Second)
		require.Error(t, err, "the port is released on stop")
		require.ErrorContains(t, f.db.PingContext(context.Background()), "database is closed")
	})
}
