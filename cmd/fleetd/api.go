package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/entryjson"
	"github.com/canonlog/canonlog/probefailures"
)

// api serves fleetd's HTTP endpoints.
type api struct {
	log      *eventlog.Log
	failures *probefailures.Store
	progress *progressStore
	logger   *slog.Logger
}

func newAPI(log *eventlog.Log, failures *probefailures.Store, progress *progressStore, logger *slog.Logger) *api {
	return &api{log: log, failures: failures, progress: progress, logger: logger}
}

// handlerParams are what fleetd's handler serves and records through.
type handlerParams struct {
	fx.In

	API     *api
	Auth    *authenticator
	Config  Config
	Metrics app.MetricsHandler
	Logger  *slog.Logger
	Meter   metric.MeterProvider
	// Tracer is Config.TracerProvider. Optional: without one nothing is
	// traced.
	Tracer trace.TracerProvider `optional:"true"`
}

// newHandler routes fleetd's endpoints, each request logged, timed and
// (with a TracerProvider) traced, and served within Config.Limits.
func newHandler(p handlerParams) (http.Handler, error) {
	a, agent, operator := p.API, p.Auth.requireAgent, p.Auth.requireOperator
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agent-events", agent(a.postAgentEvent))
	mux.HandleFunc("GET /v1/rollouts/{id}/failing-hosts", operator(a.failingHosts))
	mux.HandleFunc("GET /v1/rollouts/{id}/summary", operator(a.summary))
	mux.HandleFunc("POST /v1/rollouts/{id}/gate-decisions", operator(a.postGateDecision))
	mux.HandleFunc("GET /v1/rollouts/{id}/hosts", operator(a.hosts))
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /metrics", operator(p.Metrics.ServeHTTP))
	var routed http.Handler = sameOrigin(mux)
	if !p.Auth.enabled && !p.Config.Auth.InsecureNoAuth {
		routed = loopbackHost(routed)
	}
	h, err := newInstrumented(newLimiter(mux, routed, p.Config.Limits), p.Logger, p.Meter, p.Tracer)
	if err != nil {
		return nil, fmt.Errorf("fleetd: instrument the HTTP handler: %w", err)
	}
	return h, nil
}

// agentEventFormat is the body of POST /v1/agent-events: host_id,
// rollout_id, event_id (the agent's idempotency key: a retried post with
// the same event_id lands once), ts (when the agent observed the event;
// fleetd's clock stamps it when absent) and payload. It decodes as
// canonlog append --file reads a line.
var agentEventFormat = entryjson.MustFormat(entryjson.HostID, entryjson.RolloutID, entryjson.EventID, entryjson.TS, entryjson.Payload)

// appendResponse answers a post that appended an event.
type appendResponse struct {
	Seq       int64     `json:"seq"`
	TS        time.Time `json:"ts"`
	Duplicate bool      `json:"duplicate"`
}

// errorResponse is the body of every error: a message saying what to fix,
// and the offending field when there is one.
type errorResponse struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	// Seq is the stored event an event_id conflict is with, or the first
	// probe failure that landed after a gate decision's read_seq.
	Seq int64 `json:"seq,omitempty"`
}

// bodyOverhead is what the request envelope may add to the payload.
const bodyOverhead = 64 << 10

// postAgentEvent appends one agent event. 201 with its seq; 200 with
// duplicate=true when its event_id was already stored (the agent's retry);
// 400 for a malformed body, 422 for a malformed probe result, 409 when
// the event_id was used for a different event. Nothing is written unless
// the answer is 201.
func (a *api) postAgentEvent(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, int64(a.log.MaxPayloadBytes())+bodyOverhead)
	entry, err := decodeAgentEvent(r.Body)
	if err != nil {
		a.bodyError(w, err)
		return
	}
	if p := caller(r.Context()); p.Role == roleAgent && entry.HostID != p.Name {
		writeJSON(w, http.StatusForbidden, errorResponse{
			Error: fmt.Sprintf("host_id %q is not this agent's host (%q, from its %s): an agent posts only its own events", entry.HostID, p.Name, p.Via),
			Field: "host_id"})
		return
	}
	given := entry.EventID
	entry.EventID = agentEventID(entry.HostID, given)
	res, err := a.log.Append(r.Context(), entry)
	if err != nil {
		a.appendError(w, r, given, err)
		return
	}
	writeAppended(w, res)
}

// bodyError answers a body that could not be read or decoded: 413 when it
// is too large, 408 when it did not arrive within the server's read
// timeout, else 400 naming the field at fault (an *entryjson.Error's).
func (a *api) bodyError(w http.ResponseWriter, err error) {
	var (
		tooLarge *http.MaxBytesError
		fe       *entryjson.Error
		netErr   net.Error
	)
	switch {
	case errors.As(err, &tooLarge):
		writeJSON(w, http.StatusRequestEntityTooLarge, errorResponse{
			Error: fmt.Sprintf("body larger than %d bytes: payloads are limited to %d bytes", tooLarge.Limit, a.log.MaxPayloadBytes())})
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: fe.Error(), Field: fe.Field})
	case errors.As(err, &netErr) && netErr.Timeout():
		writeJSON(w, http.StatusRequestTimeout, errorResponse{Error: "the body did not arrive within the server's read timeout: nothing was stored; send the whole request at once, then retry"})
	default:
		// The connection failed while the body was on its way: the
		// client is most likely gone.
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "the body could not be read to its end: nothing was stored; retry"})
	}
}

// writeAppended answers an append that landed: 201, or 200 when it was
// a retry of one that had landed already (duplicate).
func writeAppended(w http.ResponseWriter, res eventlog.Result) {
	status := http.StatusCreated
	if res.Duplicate {
		status = http.StatusOK
	}
	writeJSON(w, status, appendResponse{Seq: res.Event.Seq, TS: res.Event.TS, Duplicate: res.Duplicate})
}

// decodeAgentEvent reads the body, exactly one JSON object, as an agent
// event and checks what the log cannot: the fields an agent event needs.
// A refusal is an *entryjson.Error naming the field, or the body's read
// error (*http.MaxBytesError when it is too large).
func decodeAgentEvent(body io.Reader) (eventlog.Entry, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return eventlog.Entry{}, err
	}
	if len(bytes.Trim(data, " \t\r\n")) == 0 {
		return eventlog.Entry{}, &entryjson.Error{Err: entryjson.ErrSyntax, Reason: "empty body: send a JSON object with host_id, event_id and payload"}
	}
	e, err := agentEventFormat.Decode(data)
	if err != nil {
		return e, err
	}
	e.Kind = eventlog.KindAgentEvent
	required := func(field, reason string) error {
		return &entryjson.Error{Field: field, Err: entryjson.ErrRequired, Reason: reason}
	}
	switch {
	case e.HostID == "":
		return e, required("host_id", "host_id is required")
	case checkHostID(e.HostID) != nil:
		return e, &entryjson.Error{Field: "host_id", Err: entryjson.ErrNotStorable, Reason: checkHostID(e.HostID).Error()}
	case e.EventID == "":
		return e, required("event_id", "event_id is required: the agent's id for this event, kept across retries so a retried post lands once")
	case e.Payload[0] != '{':
		// Payload null is a JSON document like any other to the log (and
		// to canonlog append); an agent event's is an object.
		return e, &entryjson.Error{Field: "payload", Err: entryjson.ErrWrongType, Reason: `payload must be a JSON object such as {"type":"Heartbeat"}`}
	}
	return e, nil
}

// appendError answers a failed append with what the caller should do;
// eventID is the event id as the caller gave it.
func (a *api) appendError(w http.ResponseWriter, r *http.Request, eventID string, err error) {
	var (
		invalid  *probefailures.ValidationError
		conflict *eventlog.ConflictError
		entry    *eventlog.EntryError
	)
	switch {
	case errors.As(err, &invalid):
		// Fields are named within the payload, except the event's host_id.
		field := invalid.Field
		if field != "host_id" {
			field = "payload." + field
		}
		writeJSON(w, http.StatusUnprocessableEntity, errorResponse{
			Error: fmt.Sprintf("payload is a malformed probe result: %s: %s; nothing was stored", field, invalid.Reason),
			Field: field,
		})
	case errors.As(err, &conflict):
		writeJSON(w, http.StatusConflict, errorResponse{
			Error: fmt.Sprintf("event_id %q already belongs to event %d, which has a different %s: use a new event_id for a new event", eventID, conflict.Seq, conflict.Field),
			Field: conflict.Field,
			Seq:   conflict.Seq,
		})
	case errors.As(err, &entry):
		// entry.Err is the reason, without the log's "entry 0:" framing.
		status := http.StatusBadRequest
		if errors.Is(err, eventlog.ErrPayloadTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		writeJSON(w, status, errorResponse{Error: entry.Err.Error(), Field: entry.Field})
	case a.unavailable(w, r, err, "retry with the same event_id"):
	default:
		a.logger.ErrorContext(r.Context(), "fleetd: append failed", "err", err)
		writeJSON(w, http.StatusInternalServerError, errorResponse{Error: "internal error: retry with the same event_id"})
	}
}

type failingHostsResponse struct {
	RolloutID string   `json:"rollout_id"`
	ControlID string   `json:"control_id"`
	Hosts     []string `json:"hosts"`
}

// failingHosts answers GET /v1/rollouts/{id}/failing-hosts?control=ID
// from probe_failures: the hosts failing a control in a rollout.
func (a *api) failingHosts(w http.ResponseWriter, r *http.Request) {
	rollout, control := r.PathValue("id"), r.URL.Query().Get("control")
	if control == "" {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "query parameter control is required, e.g. ?control=CIS-5.2.1", Field: "control"})
		return
	}
	hosts, err := a.failures.FailingHosts(r.Context(), rollout, control)
	if err != nil {
		a.queryError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, failingHostsResponse{RolloutID: rollout, ControlID: control, Hosts: hosts})
}

type summaryResponse struct {
	RolloutID    string           `json:"rollout_id"`
	FailingHosts int              `json:"failing_hosts"`
	Controls     []controlSummary `json:"controls"`
	// Seq is the seq the answer is complete up to: every probe failure of
	// the rollout up to it is counted, none after it. A gate decision
	// taken on the answer carries it as read_seq.
	Seq int64 `json:"seq"`
}

type controlSummary struct {
	ControlID    string `json:"control_id"`
	Framework    string `json:"framework"`
	FailingHosts int    `json:"failing_hosts"`
}

// summary answers GET /v1/rollouts/{id}/summary: the distinct failing
// hosts of a rollout and, per failing control, how many hosts fail it,
// read together (probefailures.Store.Gate) as of seq.
func (a *api) summary(w http.ResponseWriter, r *http.Request) {
	rollout := r.PathValue("id")
	g, err := a.failures.Gate(r.Context(), a.log, rollout)
	if err != nil {
		a.queryError(w, r, err)
		return
	}
	out := summaryResponse{RolloutID: rollout, FailingHosts: g.FailingHosts, Controls: make([]controlSummary, len(g.Controls)), Seq: g.Condition.AfterSeq}
	for i, c := range g.Controls {
		out.Controls[i] = controlSummary(c)
	}
	writeJSON(w, http.StatusOK, out)
}

type hostsResponse struct {
	RolloutID string         `json:"rollout_id"`
	Hosts     []HostProgress `json:"hosts"`
}

// hosts answers GET /v1/rollouts/{id}/hosts[?after=HOST&limit=N] from
// rollout_progress: each host's last event in the rollout, by host name.
func (a *api) hosts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxHostsLimit {
			writeJSON(w, http.StatusBadRequest, errorResponse{Error: fmt.Sprintf("limit %q: use a number from 1 to %d", v, maxHostsLimit), Field: "limit"})
			return
		}
		limit = n
	}
	hosts, err := a.progress.Hosts(r.Context(), r.PathValue("id"), q.Get("after"), limit)
	if err != nil {
		a.queryError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, hostsResponse{RolloutID: r.PathValue("id"), Hosts: hosts})
}

func (a *api) queryError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errInvalidQuery):
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: err.Error()})
	case errors.Is(err, probefailures.ErrInvalidQuery):
		// The request's checks (checkURL, the handlers') come first: the
		// store's refusal is a last line.
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: strings.TrimPrefix(err.Error(), "probefailures: ")})
	case a.unavailable(w, r, err, "retry"):
		// A summary waits for the rollout's appends in flight (on SQLite,
		// for the write lock), and may wait too long.
	default:
		a.logger.ErrorContext(r.Context(), "fleetd: query failed", "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusInternalServerError, errorResponse{Error: "internal error"})
	}
}

// unavailable answers a request that failed because the database is
// busy or unreachable (a retryable error), or that ran out of its time
// (Limits.RequestTimeout), with 503 and Retry-After, and reports true; a
// request whose client went away gets no answer, and is logged. It
// reports false for any other error. retry says how to retry.
func (a *api) unavailable(w http.ResponseWriter, r *http.Request, err error, retry string) bool {
	switch {
	case timedOut(r):
		// Whatever err says (the pool's wait, a cancelled statement),
		// the deadline caused it.
		writeUnavailable(w, "the request ran out of time waiting for the database: "+retry)
	case eventlog.Retryable(err):
		writeUnavailable(w, "the database is busy or unreachable: "+retry)
	case r.Context().Err() != nil:
		// The client went away; an agent retries with the same event_id.
		a.logger.InfoContext(r.Context(), "fleetd: request cancelled by the client", "path", r.URL.Path, "err", err)
	default:
		return false
	}
	return true
}

// healthzResponse is the body of GET /healthz; Error says why when the
// answer is 503.
type healthzResponse struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// healthz reports whether the database answers.
func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.log.DB().PingContext(ctx); err != nil {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		writeJSON(w, http.StatusServiceUnavailable, healthzResponse{Status: "database unreachable", Error: "the database did not answer a ping within 2s"})
		return
	}
	writeJSON(w, http.StatusOK, healthzResponse{Status: "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
