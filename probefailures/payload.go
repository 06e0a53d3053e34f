package probefailures

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/canonlog/canonlog/eventlog"
)

// ErrInvalidProbeResult is returned (wrapped in a *ValidationError, itself
// wrapped by the append's *projection.ApplyError) when an agent event
// claims to be a probe result but is malformed. The append is refused:
// nothing is written.
var ErrInvalidProbeResult = errors.New("invalid probe result")

// ValidationError names the field of a probe result that is malformed.
type ValidationError struct {
	Field  string // e.g. "probe_name", "sub_results[2].control_id"
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalidProbeResult, e.Field, e.Reason)
}

func (e *ValidationError) Unwrap() error { return ErrInvalidProbeResult }

// TypeProbeResult is the payload "type" of a probe result.
const TypeProbeResult = "ProbeResult"

// ProbeResult is the payload of an agent event reporting one probe run:
//
//	{"type": "ProbeResult", "mode": "enforce", "status": "fail",
//	 "probe_name": "ssh-hardening", "observed_at": "2026-05-16T01:00:00Z",
//	 "sub_results": [
//	   {"control_id": "CIS-5.2.1", "framework": "cis", "status": "fail"},
//	   {"control_id": "CIS-5.2.2", "framework": "cis", "status": "pass"}]}
type ProbeResult struct {
	Type       string      `json:"type"`
	Mode       string      `json:"mode"`   // "enforce" or "observe"
	Status     string      `json:"status"` // "fail" or "pass"
	ProbeName  string      `json:"probe_name"`
	ObservedAt string      `json:"observed_at,omitempty"` // RFC 3339; optional
	SubResults []SubResult `json:"sub_results"`
}

// SubResult is one control checked by a probe.
type SubResult struct {
	ControlID string `json:"control_id"`
	Framework string `json:"framework"`
	Status    string `json:"status"`
}

// Row is one probe_failures row.
type Row struct {
	Seq        int64 // event_log_seq: the event the row came from
	RolloutID  string
	HostID     string
	ProbeName  string
	ControlID  string
	Framework  string
	ObservedAt time.Time
}

// rawProbe decodes every field as raw JSON first, so that events of other
// types are never refused for fields they use differently, and a probe
// result's bad field can be named.
type rawProbe struct {
	Type       json.RawMessage `json:"type"`
	Mode       json.RawMessage `json:"mode"`
	Status     json.RawMessage `json:"status"`
	ProbeName  json.RawMessage `json:"probe_name"`
	ObservedAt json.RawMessage `json:"observed_at"`
	SubResults json.RawMessage `json:"sub_results"`
}

type rawSub struct {
	ControlID json.RawMessage `json:"control_id"`
	Framework json.RawMessage `json:"framework"`
	Status    json.RawMessage `json:"status"`
}

var typeMarker = []byte(`"` + TypeProbeResult + `"`)

// Rows derives the probe_failures rows of one event, appending them to dst.
// An event that is not a probe result (another kind, another payload type,
// not a JSON object) yields no row and no error. A probe result yields one
// row per failing sub-result when its mode is "enforce" and its status
// "fail", and none otherwise; a malformed probe result is an error (a
// *ValidationError) whatever its mode and status.
func Rows(dst []Row, ev eventlog.Event) ([]Row, error) {
	if ev.Kind != eventlog.KindAgentEvent {
		return dst, nil
	}
	p := ev.Payload
	// Fast path: most agent events are not probe results. (A type spelled
	// with \u escapes has no literal marker but does contain `\u`.)
	if !bytes.Contains(p, typeMarker) && !bytes.Contains(p, []byte(`\u`)) {
		return dst, nil
	}
	if out, ok := rowsFast(dst, ev); ok {
		return out, nil
	}
	return rowsSlow(dst, ev)
}

// rowsSlow decodes every field on its own, to decide exactly whether ev is
// a probe result and, if it is malformed, which field is wrong. On error
// it returns dst as it was given.
func rowsSlow(dst []Row, ev eventlog.Event) ([]Row, error) {
	p := ev.Payload
	var raw rawProbe
	if err := json.Unmarshal(p, &raw); err != nil {
		return dst, nil // not an object: not a probe result
	}
	if typ, ok := str(raw.Type); !ok || typ != TypeProbeResult {
		return dst, nil
	}
	mode, err := optionalString("mode", raw.Mode)
	if err != nil {
		return dst, err
	}
	status, err := optionalString("status", raw.Status)
	if err != nil {
		return dst, err
	}
	probe, ok := str(raw.ProbeName)
	if !ok || probe == "" {
		return dst, &ValidationError{Field: "probe_name", Reason: "missing or not a non-empty string"}
	}
	if ev.HostID == "" {
		return dst, &ValidationError{Field: "host_id", Reason: "a probe result must come from a host (the event's host_id is empty)"}
	}
	observed := ev.TS
	if len(raw.ObservedAt) > 0 && string(raw.ObservedAt) != "null" {
		s, ok := str(raw.ObservedAt)
		if !ok {
			return dst, &ValidationError{Field: "observed_at", Reason: "not a string"}
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return dst, &ValidationError{Field: "observed_at", Reason: fmt.Sprintf("%q is not an RFC 3339 timestamp", s)}
		}
		observed = eventlog.NormalizeTime(t)
	}
	var subs []rawSub
	if len(raw.SubResults) > 0 && string(raw.SubResults) != "null" {
		if raw.SubResults[0] != '[' {
			return dst, &ValidationError{Field: "sub_results", Reason: "not an array"}
		}
		if err := json.Unmarshal(raw.SubResults, &subs); err != nil {
			return dst, &ValidationError{Field: "sub_results", Reason: "every element must be an object"}
		}
	}
	emit := mode == "enforce" && status == "fail"
	first := len(dst)
	for i, sub := range subs {
		subStatus, err := optionalString(fmt.Sprintf("sub_results[%d].status", i), sub.Status)
		if err != nil {
			return dst[:first], err
		}
		if subStatus != "fail" {
			continue
		}
		control, ok := str(sub.ControlID)
		if !ok || control == "" {
			return dst[:first], &ValidationError{Field: fmt.Sprintf("sub_results[%d].control_id", i), Reason: "a failing sub-result needs a non-empty string"}
		}
		framework, ok := str(sub.Framework)
		if !ok || framework == "" {
			return dst[:first], &ValidationError{Field: fmt.Sprintf("sub_results[%d].framework", i), Reason: "a failing sub-result needs a non-empty string"}
		}
		if emit && !seen(dst[first:], framework, control) {
			dst = append(dst, Row{Seq: ev.Seq, RolloutID: ev.RolloutID, HostID: ev.HostID, ProbeName: probe,
				ControlID: control, Framework: framework, ObservedAt: observed})
		}
	}
	return dst, nil
}

// seen reports whether rows already hold the control: a probe listing the
// same failing control twice yields one row.
func seen(rows []Row, framework, control string) bool {
	for _, r := range rows {
		if r.Framework == framework && r.ControlID == control {
			return true
		}
	}
	return false
}

// str decodes raw as a JSON string.
func str(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	// No escapes: the common case, without a decoder. Invalid UTF-8 goes
	// to the decoder, which turns it into U+FFFD as the fast path does.
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func optionalString(field string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	s, ok := str(raw)
	if !ok {
		return "", &ValidationError{Field: field, Reason: "not a string"}
	}
	return s, nil
}
