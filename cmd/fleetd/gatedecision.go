package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/entryjson"
	"github.com/canonlog/canonlog/probefailures"
)

// The decisions a gate takes on a rollout's wave.
const (
	decisionAdvance = "advance"
	decisionHalt    = "halt"
)

// gateDecisionFields are the fields of the body of
// POST /v1/rollouts/{id}/gate-decisions: event_id (the caller's
// idempotency key, kept across retries), decision (advance or halt),
// read_seq (the seq of the summary the decision was taken on) and reason
// (optional text).
var gateDecisionFields = []string{"event_id", "decision", "read_seq", "reason"}

// gateDecision is a decoded body of POST /v1/rollouts/{id}/gate-decisions.
type gateDecision struct {
	EventID string
	gateDecisionPayload
}

// gateDecisionPayload is the payload of a gate_decision event.
type gateDecisionPayload struct {
	Decision string `json:"decision"`
	ReadSeq  int64  `json:"read_seq"`
	Reason   string `json:"reason,omitempty"`
}

// postGateDecision appends a gate decision for the rollout, on condition
// that no probe failure of the rollout (probefailures.FailureMatch) landed
// after read_seq: 201 with its seq; 200 with duplicate=true when its
// event_id was already stored (the caller's retry, answered as the
// original was, whatever landed since); 409 naming in seq the first
// failure after read_seq, when the decision was taken on a summary that
// is out of date; 400 for a malformed body, or a read_seq past the log's
// last event, which no summary answered with. The rest as
// POST /v1/agent-events. Nothing is written unless the answer is 201.
func (a *api) postGateDecision(w http.ResponseWriter, r *http.Request) {
	rollout := r.PathValue("id")
	r.Body = http.MaxBytesReader(w, r.Body, int64(a.log.MaxPayloadBytes())+bodyOverhead)
	d, err := decodeGateDecision(r.Body)
	if err != nil {
		a.bodyError(w, err)
		return
	}
	var payload bytes.Buffer
	enc := json.NewEncoder(&payload)
	enc.SetEscapeHTML(false) // the reason as written, not with <, > and & escaped
	if err := enc.Encode(d.gateDecisionPayload); err != nil {
		a.appendError(w, r, d.EventID, err)
		return
	}
	entry := eventlog.Entry{Kind: eventlog.KindGateDecision, RolloutID: rollout, EventID: gateEventID(d.EventID),
		Payload: bytes.TrimSuffix(payload.Bytes(), []byte("\n"))}
	// The entry's checks come before the condition's, which would refuse
	// a malformed rollout id without naming it.
	if err := entry.Validate(a.log.MaxPayloadBytes()); err != nil {
		var ee *eventlog.EntryError
		if errors.As(err, &ee) && ee.Field == "payload" {
			// The reason is the only part of the payload the body gives
			// freely: a reason too large to store.
			status := http.StatusBadRequest
			if errors.Is(err, eventlog.ErrPayloadTooLarge) {
				status = http.StatusRequestEntityTooLarge
			}
			writeJSON(w, status, errorResponse{Error: "reason: " + ee.Err.Error(), Field: "reason"})
			return
		}
		a.appendError(w, r, d.EventID, err)
		return
	}
	// A read_seq no summary answered with would let the failures between
	// the log's head and it pass unseen.
	head, err := a.log.LastSeq(r.Context())
	if err != nil {
		a.appendError(w, r, d.EventID, err)
		return
	}
	if d.ReadSeq > head {
		writeJSON(w, http.StatusBadRequest, errorResponse{
			Error: fmt.Sprintf("read_seq %d is past the log's last event, %d: send the seq of the summary (GET %s) the decision was taken on", d.ReadSeq, head, summaryPath(rollout)),
			Field: "read_seq"})
		return
	}
	cond := eventlog.Condition{Match: probefailures.FailureMatch(rollout), AfterSeq: d.ReadSeq}
	res, err := a.log.If(cond).Append(r.Context(), entry)
	var failed *eventlog.ConditionError
	switch {
	case errors.As(err, &failed):
		writeJSON(w, http.StatusConflict, errorResponse{
			Error: fmt.Sprintf("event %d, an agent event of rollout %q that may report a probe failure, landed after read_seq %d: nothing was stored; read the summary again (GET %s) and decide on it",
				failed.Seq, rollout, d.ReadSeq, summaryPath(rollout)),
			Field: "read_seq",
			Seq:   failed.Seq,
		})
	case err != nil:
		a.appendError(w, r, d.EventID, err)
	default:
		writeAppended(w, res)
	}
}

// summaryPath is the path of a rollout's summary.
func summaryPath(rollout string) string {
	return "/v1/rollouts/" + url.PathEscape(rollout) + "/summary"
}

// decodeGateDecision reads the body, exactly one JSON object, as a gate
// decision, with the checks entryjson gives an agent event's fields. A
// refusal is an *entryjson.Error naming the field, or the body's read
// error (*http.MaxBytesError when it is too large).
func decodeGateDecision(body io.Reader) (gateDecision, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return gateDecision{}, err
	}
	if len(bytes.Trim(data, " \t\r\n")) == 0 {
		return gateDecision{}, &entryjson.Error{Err: entryjson.ErrSyntax, Reason: `empty body: send a JSON object with event_id, decision and read_seq`}
	}
	var d gateDecision
	seen := map[string]bool{}
	err = entryjson.Object(data, "a gate decision", gateDecisionFields, func(key string, v json.RawMessage, at int64) error {
		seen[key] = true
		if key == "read_seq" {
			var err error
			d.ReadSeq, err = decodeReadSeq(v)
			return err
		}
		s, err := entryjson.String(key, v, at)
		switch {
		case err != nil:
		case key == "event_id":
			d.EventID = s
		case key == "decision":
			d.Decision = s
		case strings.IndexByte(s, 0) >= 0:
			err = &entryjson.Error{Field: key, Err: entryjson.ErrNotStorable, Reason: "reason holds a NUL character, which cannot be stored: leave it out"}
		default:
			d.Reason = s
		}
		return err
	})
	if err != nil {
		return gateDecision{}, err
	}
	required := func(field, reason string) error {
		return &entryjson.Error{Field: field, Err: entryjson.ErrRequired, Reason: reason}
	}
	switch {
	case d.EventID == "":
		return gateDecision{}, required("event_id", "event_id is required: the caller's id for this decision, kept across retries so a retried post lands once")
	case d.Decision != decisionAdvance && d.Decision != decisionHalt:
		reason := fmt.Sprintf("decision is required: %q or %q", decisionAdvance, decisionHalt)
		if seen["decision"] {
			reason = fmt.Sprintf("decision %s is not %q or %q", strconv.Quote(d.Decision), decisionAdvance, decisionHalt)
		}
		return gateDecision{}, &entryjson.Error{Field: "decision", Err: errInvalidGateDecision, Reason: reason}
	case !seen["read_seq"]:
		return gateDecision{}, required("read_seq", "read_seq is required: the seq of the summary (GET /v1/rollouts/{id}/summary) the decision was taken on")
	}
	return d, nil
}

// errInvalidGateDecision is in the *entryjson.Error of a gate decision
// whose decision is neither advance nor halt, or whose read_seq is no seq.
var errInvalidGateDecision = errors.New("invalid gate decision")

// decodeReadSeq reads read_seq: a whole JSON number, not negative.
func decodeReadSeq(v json.RawMessage) (int64, error) {
	if c := v[0]; c != '-' && (c < '0' || c > '9') {
		return 0, &entryjson.Error{Field: "read_seq", Err: entryjson.ErrWrongType,
			Reason: `field "read_seq" must be a number: the "seq" of the summary the decision was taken on`}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	switch {
	case err != nil:
		return 0, &entryjson.Error{Field: "read_seq", Err: errInvalidGateDecision,
			Reason: fmt.Sprintf("read_seq %s is not a seq: a whole number from 0 up", v)}
	case n < 0:
		return 0, &entryjson.Error{Field: "read_seq", Err: errInvalidGateDecision,
			Reason: fmt.Sprintf("read_seq %d is negative: seqs count from 1, and 0 is a summary of an empty log", n)}
	}
	return n, nil
}
