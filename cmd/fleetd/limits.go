package main

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Environment variables of serve's limits (--max-concurrent-requests,
// --request-timeout).
const (
	EnvMaxConcurrentRequests = "FLEETD_MAX_CONCURRENT_REQUESTS"
	EnvRequestTimeout        = "FLEETD_REQUEST_TIMEOUT"
)

// Defaults of Limits.
const (
	DefaultMaxConcurrentRequests = 64
	DefaultRequestTimeout        = 10 * time.Second
	DefaultReadHeaderTimeout     = 5 * time.Second
	DefaultReadTimeout           = 15 * time.Second
	DefaultIdleTimeout           = time.Minute
	DefaultMaxHeaderBytes        = 16 << 10
)

// writeMargin is how much longer than a request may run, or take to
// arrive, its answer may take to be written, by default.
const writeMargin = 15 * time.Second

// maxURLBytes caps a request's target (path and query): every id fleetd
// stores is at most 512 bytes, three times that percent-encoded, so a
// longer URL is a mistake or an attack. Answered 414.
const maxURLBytes = 4 << 10

// retryAfterSeconds is the Retry-After of every 503: long enough for a
// burst to pass, short enough that an agent's event is not held up.
const retryAfterSeconds = 1

// Limits bound what one request, and the requests together, may take
// from fleetd: its HTTP server's timeouts and header limit, the requests
// it serves at once, and how long one may run. The zero value is the
// defaults; fields left zero take theirs.
type Limits struct {
	// MaxConcurrentRequests caps the requests fleetd serves at once; one
	// more is answered at once with 503 and Retry-After, without waiting
	// and without doing anything. GET /metrics is not counted, so that
	// monitoring sees a saturated server. Defaults to
	// DefaultMaxConcurrentRequests (64): more would mostly wait for the
	// database pool (app.Config.MaxOpenConns, 20 on PostgreSQL).
	MaxConcurrentRequests int

	// RequestTimeout bounds a request from the moment its headers are
	// read: waiting for a database connection, or for the rollout's
	// appends a summary waits for, ends there with 503 and Retry-After
	// (retry with the same event_id: a post that timed out during its
	// commit may have landed, and its retry then answers 200 with
	// duplicate=true). Defaults to DefaultRequestTimeout (10s).
	RequestTimeout time.Duration

	// ReadHeaderTimeout bounds reading a request's headers. Defaults to
	// DefaultReadHeaderTimeout (5s).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: a body
	// that has not arrived by then is answered 408. Defaults to
	// DefaultReadTimeout (15s): an agent's event is at most the payload
	// limit (1 MiB by default) and a little more.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the
	// end of its answer. It must exceed RequestTimeout and ReadTimeout,
	// so that the answer to a request that ran out of time still gets
	// written. Defaults to the longer of the two plus writeMargin (15s):
	// 30s with their defaults.
	WriteTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request. Defaults to DefaultIdleTimeout (1m).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers, request line included
	// (http.Server.MaxHeaderBytes; net/http answers 431 beyond it).
	// Defaults to DefaultMaxHeaderBytes (16 KiB).
	MaxHeaderBytes int
}

// withDefaults fills the zero fields.
func (l Limits) withDefaults() Limits {
	set := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if l.MaxConcurrentRequests == 0 {
		l.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	set(&l.RequestTimeout, DefaultRequestTimeout)
	set(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&l.ReadTimeout, DefaultReadTimeout)
	set(&l.WriteTimeout, max(l.RequestTimeout, l.ReadTimeout)+writeMargin)
	set(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return l
}

// validate checks limits with their defaults applied.
func (l Limits) validate() error {
	var errs []error
	if l.MaxConcurrentRequests < 0 {
		errs = append(errs, fmt.Errorf("concurrency cap (Limits.MaxConcurrentRequests) is %d: use a positive number, or 0 for the default of %d", l.MaxConcurrentRequests, DefaultMaxConcurrentRequests))
	}
	for _, d := range []struct {
		name, field string
		value       time.Duration
	}{
		{"request timeout", "RequestTimeout", l.RequestTimeout}, {"header timeout", "ReadHeaderTimeout", l.ReadHeaderTimeout},
		{"read timeout", "ReadTimeout", l.ReadTimeout}, {"write timeout", "WriteTimeout", l.WriteTimeout}, {"idle timeout", "IdleTimeout", l.IdleTimeout},
	} {
		if d.value < 0 {
			errs = append(errs, fmt.Errorf("%s (Limits.%s) is %v: use a positive duration, or 0 for the default", d.name, d.field, d.value))
		}
	}
	if l.WriteTimeout <= l.RequestTimeout || l.WriteTimeout <= l.ReadTimeout {
		errs = append(errs, fmt.Errorf("write timeout (Limits.WriteTimeout) is %v: it must exceed the request timeout (%v) and the read timeout (%v), or the answer to a request that ran out of time could not be written",
			l.WriteTimeout, l.RequestTimeout, l.ReadTimeout))
	}
	if l.MaxHeaderBytes < 0 {
		errs = append(errs, fmt.Errorf("header limit (Limits.MaxHeaderBytes) is %d: use a positive number of bytes, or 0 for the default of %d", l.MaxHeaderBytes, DefaultMaxHeaderBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fleetd: invalid limits: %w", err)
	}
	return nil
}

// configure sets the server's timeouts and header limit.
func (l Limits) configure(srv *http.Server) {
	srv.ReadHeaderTimeout = l.ReadHeaderTimeout
	srv.ReadTimeout = l.ReadTimeout
	srv.WriteTimeout = l.WriteTimeout
	srv.IdleTimeout = l.IdleTimeout
	srv.MaxHeaderBytes = l.MaxHeaderBytes
}

// errRequestTimeout is the cause of a request's context ending at
// Limits.RequestTimeout, which tells fleetd's own deadline from the
// client going away (context.Canceled).
var errRequestTimeout = errors.New("fleetd: the request ran past its time limit")

// timedOut reports whether the request's context ended at fleetd's own
// deadline.
func timedOut(r *http.Request) bool {
	return errors.Is(context.Cause(r.Context()), errRequestTimeout)
}

// unlimitedRoutes are not counted against MaxConcurrentRequests: they
// touch no database, and monitoring must see a saturated server.
var unlimitedRoutes = map[string]bool{"GET /metrics": true}

// limiter serves fleetd's routes within Limits, and checks what every
// request must be before a handler sees it: a URL of bounded length,
// well-formed percent-encodings and no NUL in the path and the query,
// a JSON body for a write. Every error it or the mux answers has a JSON
// body.
type limiter struct {
	mux     *http.ServeMux // finds a request's route
	next    http.Handler   // serves it: the mux, or handlers around it
	timeout time.Duration
	max     int
	slots   chan struct{} // a token per request being served
}

// newLimiter serves through next (nil: mux itself) the requests that
// pass; mux gives their routes.
func newLimiter(mux *http.ServeMux, next http.Handler, l Limits) *limiter {
	if next == nil {
		next = mux
	}
	return &limiter{mux: mux, next: next, timeout: l.RequestTimeout, max: l.MaxConcurrentRequests, slots: make(chan struct{}, l.MaxConcurrentRequests)}
}

func (h *limiter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = &jsonErrors{ResponseWriter: w, r: r}
	// The route, set before any refusal, so that a refused request is
	// logged and counted under its route too; the mux sets the same.
	_, r.Pattern = h.mux.Handler(r)
	if len(r.RequestURI) > maxURLBytes {
		writeJSON(w, http.StatusRequestURITooLong, errorResponse{Error: fmt.Sprintf("the URL is %d bytes long, more than the %d fleetd accepts", len(r.RequestURI), maxURLBytes)})
		return
	}
	if r.Pattern == "" {
		h.next.ServeHTTP(w, r) // 404 or 405, in JSON
		return
	}
	if resp, ok := checkURL(r); !ok {
		writeJSON(w, http.StatusBadRequest, resp)
		return
	}
	if r.Method == http.MethodPost {
		if msg, ok := checkJSONBody(r.Header.Get("Content-Type")); !ok {
			writeJSON(w, http.StatusUnsupportedMediaType, errorResponse{Error: msg})
			return
		}
	}
	if !unlimitedRoutes[r.Pattern] {
		select {
		case h.slots <- struct{}{}:
			defer func() { <-h.slots }()
		default:
			writeUnavailable(w, fmt.Sprintf("fleetd is serving as many requests as it may at once (%d): nothing was done; retry in %d s", h.max, retryAfterSeconds))
			return
		}
	}
	ctx, cancel := context.WithTimeoutCause(r.Context(), h.timeout, errRequestTimeout)
	defer cancel()
	routed := r.WithContext(ctx)
	h.next.ServeHTTP(w, routed)
	r.Pattern = routed.Pattern
}

// writeUnavailable answers 503 with Retry-After: the request may succeed
// when tried again.
func writeUnavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	writeJSON(w, http.StatusServiceUnavailable, errorResponse{Error: msg})
}

// checkJSONBody reports whether a write's Content-Type is JSON:
// application/json, with a charset only if it is UTF-8. Anything else,
// a missing one included, is refused, so that a web page of another
// origin, which may post text/plain or a form without asking, cannot
// write to fleetd.
func checkJSONBody(contentType string) (string, bool) {
	const fix = "send the body as JSON with Content-Type: application/json"
	if contentType == "" {
		return "Content-Type is missing: " + fix, false
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	switch {
	case err != nil:
		return fmt.Sprintf("Content-Type %q is malformed: %s", contentType, fix), false
	case mediaType != "application/json":
		return fmt.Sprintf("Content-Type is %s: %s", mediaType, fix), false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return fmt.Sprintf("charset %s: JSON bodies are UTF-8: %s (charset=utf-8 may follow)", cs, fix), false
	}
	return "", true
}

// checkURL refuses a path segment or a query parameter that decodes to
// what no id can be: a malformed percent-encoding, text that is not
// UTF-8, a NUL. It names the path's wildcard (pathFields) or the query
// parameter at fault. (net/http itself refuses a malformed
// percent-encoding in the path, with a plain-text 400, before any
// handler runs.)
func checkURL(r *http.Request) (errorResponse, bool) {
	names := wildcards(r.Pattern)
	for i, seg := range strings.Split(r.URL.EscapedPath(), "/") {
		v, err := url.PathUnescape(seg)
		field, what := "path", "the path"
		if i < len(names) && names[i] != "" {
			field, what = names[i], "the {"+names[i]+"} in the path"
			if f, ok := pathFields[names[i]]; ok {
				field, what = f.field, f.what
			}
		}
		if reason := badText(v, err); reason != "" {
			return errorResponse{Error: what + " " + reason, Field: field}, false
		}
	}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if reason := badText(key, err); reason != "" {
			return errorResponse{Error: "a query parameter's name " + reason, Field: rawKey}, false
		}
		if strings.Contains(pair, ";") {
			return errorResponse{Error: fmt.Sprintf("query parameter %s holds a ';', which does not separate parameters: use '&', or %%3B for a ';' in a value", key), Field: key}, false
		}
		value, err := url.QueryUnescape(rawValue)
		if reason := badText(value, err); reason != "" {
			return errorResponse{Error: "query parameter " + key + " " + reason, Field: key}, false
		}
	}
	return errorResponse{}, true
}

// pathFields name the path's wildcards as the rest of the API does: the
// {id} of /v1/rollouts/{id}/… is the rollout_id of its events.
var pathFields = map[string]struct{ field, what string }{
	"id": {"rollout_id", "the rollout id in the path"},
}

// badText says what is wrong with a decoded part of the URL (err is its
// decoding's error), or "" when nothing is.
func badText(s string, err error) string {
	var escape url.EscapeError
	switch {
	case errors.As(err, &escape):
		return fmt.Sprintf("holds %s, not a percent-encoding: write %% as %%25", string(escape))
	case err != nil:
		return "is not a valid percent-encoding"
	case !utf8.ValidString(s):
		return "is not UTF-8 text once percent-decoded: percent-encode the UTF-8 bytes of the text"
	case strings.IndexByte(s, 0) >= 0:
		return "holds a NUL character (%00), which no id can hold"
	}
	return ""
}

// wildcards returns, for each segment of a mux pattern's path, the name
// of its wildcard ("id" for {id}), or "" for a literal segment; a
// {name...} wildcard names every segment from it on.
func wildcards(pattern string) []string {
	i := strings.IndexByte(pattern, '/')
	if i < 0 {
		return nil
	}
	segs := strings.Split(pattern[i:], "/")
	names := make([]string, len(segs))
	for i, s := range segs {
		if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
			continue
		}
		name := strings.TrimSuffix(s[1:len(s)-1], "...")
		if name == "$" {
			continue // {$} matches the end of the path
		}
		names[i] = name
		if strings.HasSuffix(s, "...}") {
			return names
		}
	}
	return names
}

// jsonErrors turns an error answer that is not JSON — the mux's own 404
// and 405, or http.Error's anywhere — into fleetd's JSON error body, so
// that every error a client gets is {"error", "field"}.
type jsonErrors struct {
	http.ResponseWriter
	r        *http.Request
	replaced bool // the plain-text body is dropped
}

func (w *jsonErrors) WriteHeader(code int) {
	if code < 400 || isJSON(w.Header().Get("Content-Type")) {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.replaced = true
	w.Header().Del("Content-Length")
	msg := strings.ToLower(http.StatusText(code))
	switch code {
	case http.StatusNotFound:
		msg = fmt.Sprintf("fleetd has no endpoint %s %s", w.r.Method, w.r.URL.Path)
	case http.StatusMethodNotAllowed:
		msg = fmt.Sprintf("%s is not allowed on %s: use %s", w.r.Method, w.r.URL.Path, w.Header().Get("Allow"))
	}
	writeJSON(w.ResponseWriter, code, errorResponse{Error: msg})
}

func (w *jsonErrors) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *jsonErrors) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && mediaType == "application/json"
}

// limitsFromEnv reads serve's limits from the environment, through
// lookup, over the defaults.
func limitsFromEnv(lookup func(string) (string, bool)) (Limits, error) {
	// The two that serve has flags for, for their help to show; Options
	// fills the others (WriteTimeout follows RequestTimeout).
	l := Limits{MaxConcurrentRequests: DefaultMaxConcurrentRequests, RequestTimeout: DefaultRequestTimeout}
	var errs []error
	if v, _ := lookup(EnvMaxConcurrentRequests); strings.TrimSpace(v) != "" {
		var n positiveInt
		if err := n.Set(strings.TrimSpace(v)); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: use a whole number from 1 up (the default is %d)", EnvMaxConcurrentRequests, v, DefaultMaxConcurrentRequests))
		}
		l.MaxConcurrentRequests = int(n)
	}
	if v, _ := lookup(EnvRequestTimeout); strings.TrimSpace(v) != "" {
		var d positiveDuration
		if err := d.Set(strings.TrimSpace(v)); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: use a positive duration such as 10s (the default)", EnvRequestTimeout, v))
		}
		l.RequestTimeout = time.Duration(d)
	}
	return l, errors.Join(errs...)
}

// positiveInt is a flag value that refuses zero and negative numbers, so
// that a bad --max-concurrent-requests is a flag error (exit 2).
type positiveInt int

func (n *positiveInt) String() string { return strconv.Itoa(int(*n)) }
func (n *positiveInt) Type() string   { return "int" }

func (n *positiveInt) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	if v <= 0 {
		return fmt.Errorf("%d: use a number from 1 up", v)
	}
	*n = positiveInt(v)
	return nil
}
