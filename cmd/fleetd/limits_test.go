package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// answer is an HTTP answer as a client sees it.
type answer struct {
	status      int
	contentType string
	retryAfter  string
	allow       string
	body        string
	err         errorResponse // the body decoded, when it is JSON
}

// send sends a request to base+target (target as written, not
// re-encoded) with the given Content-Type ("" for none).
func send(t *testing.T, base, method, target, contentType, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, base+"/", strings.NewReader(body))
	require.NoError(t, err)
	req.URL.Opaque = target // the request line's target, as written
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), retryAfter: resp.Header.Get("Retry-After"),
		allow: resp.Header.Get("Allow"), body: string(raw)}
	if isJSON(a.contentType) {
		require.NoError(t, json.Unmarshal(raw, &a.err), a.body)
	}
	return a
}

// requireJSONError checks an error answer: its status, and a JSON body
// {"error","field"} whose message speaks of the API only.
func requireJSONError(t *testing.T, a answer, status int, field string) {
	t.Helper()
	require.Equal(t, status, a.status, a.body)
	require.Equal(t, "application/json", a.contentType, a.body)
	require.NotEmpty(t, a.err.Error, a.body)
	require.Equal(t, field, a.err.Field, a.body)
	requirePublicMessage(t, a.err.Error)
}

// internalWords are what an error message must not show a client: the
// prefixes of canonlog's packages and fleetd's own, Go type names, fmt's
// verbs gone wrong, source positions.
var internalWords = regexp.MustCompile(`\b(eventlog|entryjson|probefailures|projection|app|fleetd|pq|sql|http): |\*[a-z]+\.[A-Z]|%!|\.go:\d`)

func requirePublicMessage(t *testing.T, msg string) {
	t.Helper()
	require.NotRegexp(t, internalWords, msg)
}

// fakeRoutes is a mux with fleetd's routes, each answering 200 unless
// handle says otherwise.
func fakeRoutes(handle http.HandlerFunc) *http.ServeMux {
	mux := http.NewServeMux()
	for _, p := range []string{"POST /v1/agent-events", "GET /v1/rollouts/{id}/failing-hosts", "GET /v1/rollouts/{id}/summary",
		"POST /v1/rollouts/{id}/gate-decisions", "GET /v1/rollouts/{id}/hosts", "GET /healthz", "GET /metrics"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			if handle != nil {
				handle(w, r)
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
		})
	}
	return mux
}

// TestLimiter: what every request must be before a handler sees it, and
// the JSON body of every refusal, against fleetd's routes with stand-in
// handlers.
func TestLimiter(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newLimiter(fakeRoutes(nil), nil, Limits{}.withDefaults()))
	t.Cleanup(srv.Close)

	t.Run("unknown_path_is_404_in_json", func(t *testing.T) {
		t.Parallel()
		a := send(t, srv.URL, "GET", "/v2/nothing/here", "", "")
		requireJSONError(t, a, http.StatusNotFound, "")
		require.Equal(t, "fleetd has no endpoint GET /v2/nothing/here", a.err.Error)
	})

	t.Run("wrong_method_is_405_in_json", func(t *testing.T) {
		t.Parallel()
		a := send(t, srv.URL, "GET", "/v1/agent-events", "", "")
		requireJSONError(t, a, http.StatusMethodNotAllowed, "")
		require.Equal(t, "POST", a.allow, "the Allow header stays")
		require.Equal(t, "GET is not allowed on /v1/agent-events: use POST", a.err.Error)
		a = send(t, srv.URL, "DELETE", "/v1/rollouts/r-1/summary", "", "")
		requireJSONError(t, a, http.StatusMethodNotAllowed, "")
		require.Contains(t, a.err.Error, "use GET, HEAD")
	})

	t.Run("writes_take_json_only", func(t *testing.T) {
		t.Parallel()
		for _, ct := range []string{"", "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
			"multipart/form-data; boundary=x", "application/json; charset=latin1", "application/jsonx", "application/json; charset"} {
			for _, path := range []string{"/v1/agent-events", "/v1/rollouts/r-1/gate-decisions"} {
				a := send(t, srv.URL, "POST", path, ct, `{}`)
				requireJSONError(t, a, http.StatusUnsupportedMediaType, "")
				require.Contains(t, a.err.Error, "Content-Type: application/json", "%q", ct)
			}
		}
		for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"} {
			require.Equal(t, http.StatusOK, send(t, srv.URL, "POST", "/v1/agent-events", ct, `{}`).status, ct)
		}
		require.Equal(t, http.StatusOK, send(t, srv.URL, "GET", "/v1/rollouts/r-1/summary", "text/plain", "").status, "reads take any")
	})

	t.Run("url_too_long", func(t *testing.T) {
		t.Parallel()
		a := send(t, srv.URL, "GET", "/v1/rollouts/r-1/hosts?after="+strings.Repeat("h", maxURLBytes), "", "")
		requireJSONError(t, a, http.StatusRequestURITooLong, "")
		// Up to the limit it is served.
		target := "/v1/rollouts/r-1/hosts?after="
		require.Equal(t, http.StatusOK, send(t, srv.URL, "GET", target+strings.Repeat("h", maxURLBytes-len(target)), "", "").status)
	})

	t.Run("malformed_url_parts", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ target, field string }{
			{"/v1/rollouts/r%FF/summary", "rollout_id"},
			{"/v1/rollouts/%C3/hosts", "rollout_id"},
			{"/v1/rollouts/r%00/summary", "rollout_id"},
			{"/v1/rollouts/r-1/failing-hosts?control=%ZZ", "control"},
			{"/v1/rollouts/r-1/failing-hosts?control=CIS%FF", "control"},
			{"/v1/rollouts/r-1/failing-hosts?control=CIS%00", "control"},
			{"/v1/rollouts/r-1/failing-hosts?control=a;b", "control"},
			{"/v1/rollouts/r-1/hosts?after=%FF", "after"},
			{"/v1/rollouts/r-1/hosts?after=web%00", "after"},
			{"/v1/rollouts/r-1/hosts?limit=%ZZ", "limit"},
			{"/v1/rollouts/r-1/hosts?limit=1%00", "limit"},
			{"/v1/rollouts/r-1/hosts?li%ZZmit=1", "li%ZZmit"},
		} {
			a := send(t, srv.URL, "GET", tc.target, "", "")
			requireJSONError(t, a, http.StatusBadRequest, tc.field)
		}
		a := send(t, srv.URL, "GET", "/v1/rollouts/r%00/summary", "", "")
		require.Equal(t, "the rollout id in the path holds a NUL character (%00), which no id can hold", a.err.Error)
		a = send(t, srv.URL, "GET", "/v1/rollouts/r-1/failing-hosts?control=%ZZ", "", "")
		require.Equal(t, "query parameter control holds %ZZ, not a percent-encoding: write % as %25", a.err.Error)

		// What decodes to UTF-8 text without a NUL goes through, an
		// encoded slash included.
		a = send(t, srv.URL, "GET", "/v1/rollouts/r%2F%C3%A9/summary?x=%E2%82%AC", "", "")
		require.Equal(t, http.StatusOK, a.status, a.body)
		require.JSONEq(t, `{"id":"r/é"}`, a.body)
		// net/http refuses a malformed percent-encoding in the path
		// itself, before any handler: a 400 all the same.
		require.Equal(t, http.StatusBadRequest, send(t, srv.URL, "GET", "/v1/rollouts/%ZZ/summary", "", "").status)
	})
}

func TestWildcards(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"", "", "", "id", ""}, wildcards("GET /v1/rollouts/{id}/summary"))
	require.Equal(t, []string{"", "", "rest"}, wildcards("/files/{rest...}"))
	require.Equal(t, []string{"", ""}, wildcards("GET example.com/{$}"))
	require.Nil(t, wildcards(""))
}

// TestConcurrencyCap: past MaxConcurrentRequests requests in flight, one
// more is answered 503 at once, without reaching its handler; /metrics
// is not counted.
func TestConcurrencyCap(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	var reached atomic.Int32
	mux := fakeRoutes(func(w http.ResponseWriter, r *http.Request) {
		if r.Pattern == "GET /metrics" {
			writeJSON(w, http.StatusOK, map[string]string{})
			return
		}
		reached.Add(1)
		entered <- struct{}{}
		<-release
		writeJSON(w, http.StatusOK, map[string]string{})
	})
	srv := httptest.NewServer(newLimiter(mux, nil, Limits{MaxConcurrentRequests: 2}.withDefaults()))
	t.Cleanup(srv.Close)

	held := make(chan answer, 2)
	for range 2 {
		go func() { held <- send(t, srv.URL, "GET", "/v1/rollouts/r-1/summary", "", "") }()
		<-entered
	}
	a := send(t, srv.URL, "POST", "/v1/agent-events", "application/json", `{}`)
	requireJSONError(t, a, http.StatusServiceUnavailable, "")
	require.Equal(t, "1", a.retryAfter)
	require.Contains(t, a.err.Error, "nothing was done")
	require.Equal(t, http.StatusOK, send(t, srv.URL, "GET", "/metrics", "", "").status, "monitoring still gets through")
	close(release)
	for range 2 {
		require.Equal(t, http.StatusOK, (<-held).status)
	}
	require.Equal(t, int32(2), reached.Load(), "the refused request reached no handler")
}

// TestRequestDeadline: a request's context ends at RequestTimeout with a
// cause that tells it from the client going away.
func TestRequestDeadline(t *testing.T) {
	t.Parallel()
	t.Run("our_deadline", func(t *testing.T) {
		t.Parallel()
		causes := make(chan error, 1)
		mux := fakeRoutes(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
			causes <- context.Cause(r.Context())
			if timedOut(r) {
				writeUnavailable(w, "too slow")
			}
		})
		srv := httptest.NewServer(newLimiter(mux, nil, Limits{RequestTimeout: 50 * time.Millisecond}.withDefaults()))
		t.Cleanup(srv.Close)
		a := send(t, srv.URL, "GET", "/v1/rollouts/r-1/summary", "", "")
		require.Equal(t, http.StatusServiceUnavailable, a.status)
		require.ErrorIs(t, <-causes, errRequestTimeout)
	})

	t.Run("client_gone", func(t *testing.T) {
		t.Parallel()
		entered, causes := make(chan struct{}), make(chan error, 1)
		mux := fakeRoutes(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-r.Context().Done()
			causes <- context.Cause(r.Context())
			require.False(t, timedOut(r))
		})
		srv := httptest.NewServer(newLimiter(mux, nil, Limits{}.withDefaults()))
		t.Cleanup(srv.Close)
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/rollouts/r-1/hosts", nil)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_ = resp.Body.Close()
			}
			done <- err
		}()
		<-entered
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		cause := <-causes
		require.ErrorIs(t, cause, context.Canceled)
		require.NotErrorIs(t, cause, errRequestTimeout)
	})
}

// TestUnavailable: the database's transient errors and fleetd's own
// deadline are 503 with Retry-After; a client that went away gets no
// answer; anything else is not for unavailable to answer.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t)
	a := &api{logger: slog.New(rec)}
	expired, cancel := context.WithTimeoutCause(context.Background(), 0, errRequestTimeout)
	defer cancel()
	gone, goneCancel := context.WithCancel(context.Background())
	goneCancel()
	tooMany := fmt.Errorf("eventlog: begin: %w", &pq.Error{Code: pqerror.Code("53300"), Message: "sorry, too many clients already"})

	for name, tc := range map[string]struct {
		ctx     context.Context
		err     error
		handled bool
		status  int
		want    string
	}{
		"our_deadline":       {ctx: expired, err: context.DeadlineExceeded, handled: true, status: 503, want: "ran out of time"},
		"our_deadline_pq":    {ctx: expired, err: &pq.Error{Code: "57014", Message: "canceling statement due to user request"}, handled: true, status: 503, want: "ran out of time"},
		"too_many_conns":     {ctx: context.Background(), err: tooMany, handled: true, status: 503, want: "busy or unreachable"},
		"client_gone":        {ctx: gone, err: context.Canceled, handled: true, status: 0},
		"another_error":      {ctx: context.Background(), err: errors.New("boom"), handled: false},
		"config_limit_53400": {ctx: context.Background(), err: &pq.Error{Code: "53400"}, handled: false},
	} {
		t.Run(name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequestWithContext(tc.ctx, http.MethodPost, "/v1/agent-events", nil)
			require.Equal(t, tc.handled, a.unavailable(w, r, tc.err, "retry with the same event_id"))
			if tc.status == 0 {
				require.Zero(t, w.Body.Len(), "no answer for a client that is gone")
				return
			}
			require.Equal(t, tc.status, w.Code)
			require.Equal(t, "1", w.Header().Get("Retry-After"))
			var body errorResponse
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &body))
			require.Contains(t, body.Error, tc.want)
			require.Contains(t, body.Error, "retry with the same event_id")
		})
	}
	require.Contains(t, rec.messages(), "fleetd: request cancelled by the client")
}

func TestLimitsConfig(t *testing.T) {
	t.Parallel()
	l := Limits{}.withDefaults()
	require.Equal(t, Limits{MaxConcurrentRequests: 64, RequestTimeout: 10 * time.Second, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 15 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}, l)
	require.NoError(t, l.validate())
	require.Equal(t, 75*time.Second, Limits{RequestTimeout: time.Minute}.withDefaults().WriteTimeout, "the write timeout follows the request's")

	var srv http.Server
	l.configure(&srv)
	require.Equal(t, l.ReadHeaderTimeout, srv.ReadHeaderTimeout)
	require.Equal(t, l.ReadTimeout, srv.ReadTimeout)
	require.Equal(t, l.WriteTimeout, srv.WriteTimeout)
	require.Equal(t, l.IdleTimeout, srv.IdleTimeout)
	require.Equal(t, l.MaxHeaderBytes, srv.MaxHeaderBytes)

	for name, tc := range map[string]struct {
		limits Limits
		want   string
	}{
		"negative_cap":          {Limits{MaxConcurrentRequests: -1}, "concurrency cap (Limits.MaxConcurrentRequests) is -1"},
		"negative_timeout":      {Limits{ReadHeaderTimeout: -time.Second}, "header timeout (Limits.ReadHeaderTimeout) is -1s"},
		"write_below_request":   {Limits{RequestTimeout: time.Minute, WriteTimeout: 30 * time.Second}, "write timeout (Limits.WriteTimeout) is 30s: it must exceed the request timeout (1m0s)"},
		"write_below_read":      {Limits{ReadTimeout: time.Minute, WriteTimeout: time.Minute}, "must exceed"},
		"negative_header_bytes": {Limits{MaxHeaderBytes: -1}, "header limit (Limits.MaxHeaderBytes) is -1"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := tc.limits.withDefaults().validate()
			require.ErrorContains(t, err, tc.want)
			// Options refuses them, before anything is opened.
			err = fx.ValidateApp(fx.NopLogger, Options(Config{Limits: tc.limits, Canonlog: app.Config{DatabaseURL: "sqlite::memory:"}}))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestLimits: fleetd's whole graph on both backends: requests refused
// before they touch the database, requests that wait too long for it,
// and the server's own limits.
func TestLimits(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		t.Run("refused_before_the_database", func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			f := setupService(t, backend, Config{Logger: slog.New(rec)})
			base := "http://" + f.server.Addr()
			before := lastSeq(t, f.log)

			// A web page of another origin may post text/plain without
			// asking: it writes nothing.
			a := send(t, base, "POST", "/v1/agent-events", "text/plain", probeBody("web-1", "r-1", "web-1/1", "CIS-1"))
			requireJSONError(t, a, http.StatusUnsupportedMediaType, "")
			for _, tc := range []struct{ target, field string }{
				{"/v1/rollouts/r%FF/summary", "rollout_id"},
				{"/v1/rollouts/r%00/summary", "rollout_id"},
				{"/v1/rollouts/r%FF/failing-hosts?control=C", "rollout_id"},
				{"/v1/rollouts/r-1/failing-hosts?control=%FF", "control"},
				{"/v1/rollouts/r-1/failing-hosts?control=%ZZ", "control"},
				{"/v1/rollouts/r-1/failing-hosts?control=C%00", "control"},
				{"/v1/rollouts/r%FF/hosts", "rollout_id"},
				{"/v1/rollouts/r-1/hosts?after=%FF", "after"},
				{"/v1/rollouts/r-1/hosts?after=%00", "after"},
				{"/v1/rollouts/r-1/hosts?limit=%ZZ", "limit"},
				{"/v1/rollouts/r-1/hosts?limit=%00", "limit"},
			} {
				requireJSONError(t, send(t, base, "GET", tc.target, "", ""), http.StatusBadRequest, tc.field)
			}
			a = send(t, base, "POST", "/v1/rollouts/r%FF/gate-decisions", "application/json", decisionBody("g-1", "halt", 0))
			requireJSONError(t, a, http.StatusBadRequest, "rollout_id")
			require.Equal(t, before, lastSeq(t, f.log), "nothing was written")

			requireNoErrorLogged(t, rec)
			// Refused requests are logged under their route.
			lines := rec.requests()
			require.Equal(t, "/v1/agent-events", lines[0].attrs["route"].String())
			require.Equal(t, int64(415), lines[0].attrs["status"].Int64())
			require.Equal(t, "/v1/rollouts/{id}/summary", lines[1].attrs["route"].String())
		})

		t.Run("every_error_is_json_in_the_api's_words", func(t *testing.T) {
			t.Parallel()
			f := setup(t, backend, app.Config{MaxPayloadBytes: maxPayload})
			base := "http://" + f.server.Addr()
			const ct = "application/json"
			require.Equal(t, http.StatusCreated, send(t, base, "POST", "/v1/agent-events", ct, probeBody("web-1", "r-1", "web-1/1", "CIS-1")).status)
			for _, tc := range []struct {
				method, target, contentType, body string
				status                            int
			}{
				{"GET", "/nowhere", "", "", 404},
				{"PUT", "/v1/agent-events", ct, `{}`, 405},
				{"POST", "/v1/agent-events", "text/plain", `{}`, 415},
				{"GET", "/v1/rollouts/r-1/hosts?after=" + strings.Repeat("x", maxURLBytes), "", "", 414},
				{"POST", "/v1/agent-events", ct, `{"host_id":"h"`, 400},
				{"POST", "/v1/agent-events", ct, `{"host_id":"h","event_id":"e","payload":{"blob":"` + strings.Repeat("x", maxPayload) + `"}}`, 413},
				{"POST", "/v1/agent-events", ct, `{"host_id":"h","event_id":"e","payload":{"blob":"` + strings.Repeat("x", maxPayload+bodyOverhead) + `"}}`, 413},
				{"POST", "/v1/agent-events", ct, `{"host_id":"h","event_id":"e","ts":"0000-01-01T00:00:00Z","payload":{}}`, 400},
				{"POST", "/v1/agent-events", ct, `{"host_id":"` + strings.Repeat("h", 600) + `","event_id":"e","payload":{}}`, 400},
				{"POST", "/v1/agent-events", ct, `{"host_id":"web-1","rollout_id":"r-1","event_id":"web-1/1","payload":{}}`, 409},
				{"POST", "/v1/agent-events", ct, `{"host_id":"h","rollout_id":"r-1","event_id":"p","payload":{"type":"ProbeResult","mode":"enforce","status":"fail","sub_results":[]}}`, 422},
				{"POST", "/v1/rollouts/r-1/gate-decisions", ct, decisionBody("g", "halt", 99), 400},
				{"POST", "/v1/rollouts/r-1/gate-decisions", ct, `{"event_id":"g","decision":"halt","read_seq":0,"reason":"` + strings.Repeat("r", maxPayload) + `"}`, 413},
				{"POST", "/v1/rollouts/r-1/gate-decisions", ct, decisionBody("g", "halt", 0), 409},
				{"POST", "/v1/rollouts/" + strings.Repeat("r", 513) + "/gate-decisions", ct, decisionBody("g", "halt", 0), 400},
				{"GET", "/v1/rollouts/r-1/failing-hosts", "", "", 400},
				{"GET", "/v1/rollouts/r-1/hosts?limit=-1", "", "", 400},
				{"GET", "/v1/rollouts/r-1/hosts?limit=lots", "", "", 400},
				{"GET", "/v1/rollouts/r%00/summary", "", "", 400},
			} {
				a := send(t, base, tc.method, tc.target, tc.contentType, tc.body)
				require.Equal(t, tc.status, a.status, "%s %.60s: %s", tc.method, tc.target, a.body)
				require.Equal(t, "application/json", a.contentType, "%s %.60s: %s", tc.method, tc.target, a.body)
				require.NotEmpty(t, a.err.Error, a.body)
				requirePublicMessage(t, a.err.Error)
			}
		})

		// A request that waits for a pool connection ends at its
		// deadline, with 503 and Retry-After, and writes nothing.
		t.Run("waiting_for_the_pool_ends_in_503", func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			f := setupService(t, backend, Config{Logger: slog.New(rec), Canonlog: app.Config{MaxOpenConns: 1},
				Limits: Limits{RequestTimeout: 200 * time.Millisecond}})
			base := "http://" + f.server.Addr()
			before := lastSeq(t, f.log)
			conn, err := f.db.Conn(context.Background()) // the pool's only connection
			require.NoError(t, err)

			a := send(t, base, "POST", "/v1/agent-events", "application/json", probeBody("web-1", "r-1", "web-1/1", "CIS-1"))
			requireJSONError(t, a, http.StatusServiceUnavailable, "")
			require.Equal(t, "1", a.retryAfter)
			require.Equal(t, "the request ran out of time waiting for the database: retry with the same event_id", a.err.Error)
			for _, target := range []string{"/v1/rollouts/r-1/summary", "/v1/rollouts/r-1/failing-hosts?control=CIS-1", "/v1/rollouts/r-1/hosts"} {
				a = send(t, base, "GET", target, "", "")
				requireJSONError(t, a, http.StatusServiceUnavailable, "")
				require.Equal(t, "1", a.retryAfter, target)
			}
			a = send(t, base, "POST", "/v1/rollouts/r-1/gate-decisions", "application/json", decisionBody("g-1", "halt", 0))
			requireJSONError(t, a, http.StatusServiceUnavailable, "")
			a = send(t, base, "GET", "/healthz", "", "")
			require.Equal(t, http.StatusServiceUnavailable, a.status, a.body)
			require.Equal(t, "1", a.retryAfter)
			require.NotEmpty(t, a.err.Error)

			require.NoError(t, conn.Close())
			require.Equal(t, before, lastSeq(t, f.log), "nothing was written")
			requireNoErrorLogged(t, rec)
		})

		t.Run("slow_body_is_408", func(t *testing.T) {
			t.Parallel()
			f := setupService(t, backend, Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Limits: Limits{ReadTimeout: time.Second}})
			before := lastSeq(t, f.log)
			conn, err := net.Dial("tcp", f.server.Addr())
			require.NoError(t, err)
			defer conn.Close()
			// Headers and half the body, then nothing.
			_, err = fmt.Fprintf(conn, "POST /v1/agent-events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"host_id\":")
			require.NoError(t, err)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
			var body errorResponse
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			require.Contains(t, body.Error, "did not arrive")
			require.Equal(t, before, lastSeq(t, f.log))
		})

		t.Run("server_limits", func(t *testing.T) {
			t.Parallel()
			f := setupService(t, backend, Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Limits: Limits{MaxConcurrentRequests: 5}})
			want := Limits{MaxConcurrentRequests: 5}.withDefaults()
			require.Equal(t, want.ReadTimeout, f.server.srv.ReadTimeout)
			require.Equal(t, want.ReadHeaderTimeout, f.server.srv.ReadHeaderTimeout)
			require.Equal(t, want.WriteTimeout, f.server.srv.WriteTimeout)
			require.Equal(t, want.IdleTimeout, f.server.srv.IdleTimeout)
			require.Equal(t, want.MaxHeaderBytes, f.server.srv.MaxHeaderBytes)

			req, err := http.NewRequest(http.MethodGet, "http://"+f.server.Addr()+"/healthz", nil)
			require.NoError(t, err)
			req.Header.Set("X-Padding", strings.Repeat("p", 2*DefaultMaxHeaderBytes))
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode, "net/http's own answer")
		})
	})
}

// requireNoErrorLogged: nothing was logged at ERROR, where a request
// fleetd answers as it should never goes.
func requireNoErrorLogged(t *testing.T, rec *recorder) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.records {
		require.Less(t, r.Level, slog.LevelError, "%s", r.Message)
	}
}

// TestServeLimitFlags: serve's limits from its flags and the
// environment, refused with the fix named when malformed; like every
// fleetd flag they take two dashes.
func TestServeLimitFlags(t *testing.T) {
	t.Parallel()
	runCases(t, map[string]cliCase{
		"help": {args: []string{"serve", "--help"}, code: exitOK,
			want: []string{"--max-concurrent-requests int", "(default 64)", "--request-timeout duration", "(default 10s)",
				EnvMaxConcurrentRequests, EnvRequestTimeout, app.EnvMaxOpenConns, app.EnvMaxIdleConns, app.EnvStaleRebuildFast}},
		"zero_cap":         {args: []string{"--max-concurrent-requests", "0"}, code: exitUsage, want: []string{"--max-concurrent-requests", "use a number from 1 up"}},
		"cap_not_a_number": {args: []string{"serve", "--max-concurrent-requests=lots"}, code: exitUsage, want: []string{`"lots" is not a whole number`}},
		"zero_timeout":     {args: []string{"--request-timeout", "0s"}, code: exitUsage, want: []string{"--request-timeout", "use a positive duration"}},
		"single_dash":      {args: []string{"-max-concurrent-requests", "5"}, code: exitUsage, want: []string{"-max-concurrent-requests: fleetd's flags take two dashes: --max-concurrent-requests"}},
		"single_dash_timeout": {args: []string{"-request-timeout=5s", "--addr", "127.0.0.1:0"}, code: exitUsage,
			want: []string{"fleetd's flags take two dashes: --request-timeout"}},
		"bad_env_cap": {env: map[string]string{EnvMaxConcurrentRequests: "-3"}, code: exitFailure,
			want: []string{`FLEETD_MAX_CONCURRENT_REQUESTS="-3": use a whole number from 1 up`}},
		"bad_env_timeout": {env: map[string]string{EnvRequestTimeout: "10"}, code: exitFailure,
			want: []string{`FLEETD_REQUEST_TIMEOUT="10": use a positive duration such as 10s`}},
		"bad_env_pool": {env: map[string]string{app.EnvMaxOpenConns: "none"}, code: exitFailure,
			want: []string{`CANONLOG_MAX_OPEN_CONNS="none"`}},
	})

	t.Run("from_env_and_flags", func(t *testing.T) {
		t.Parallel()
		l, err := limitsFromEnv(envOf(map[string]string{EnvMaxConcurrentRequests: " 8 ", EnvRequestTimeout: "3s"}))
		require.NoError(t, err)
		require.Equal(t, Limits{MaxConcurrentRequests: 8, RequestTimeout: 3 * time.Second}, l)
		l, err = limitsFromEnv(noEnv)
		require.NoError(t, err)
		require.Equal(t, Limits{MaxConcurrentRequests: DefaultMaxConcurrentRequests, RequestTimeout: DefaultRequestTimeout}, l)
		require.Equal(t, []string{"serve", "--max-concurrent-requests", "8", "--request-timeout=2s"},
			withDefaultCommand([]string{"--max-concurrent-requests", "8", "--request-timeout=2s"}), "serve's flags alone serve")
	})
}
