package canonlogcli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
)

// Output formats.
const (
	outputTable  = "table"
	outputJSON   = "json"
	outputNDJSON = "ndjson"
)

// addOutputFlag adds --output with the formats a command supports, the
// first being the default, and completes them in the shell.
func addOutputFlag(cmd *cobra.Command, dst *string, formats ...string) {
	cmd.Flags().StringVarP(dst, "output", "o", formats[0], "output format: "+strings.Join(formats, ", "))
	completeFlag(cmd, "output", fixedCompletions(formats...))
}

func checkOutput(got string, formats ...string) error {
	if !slices.Contains(formats, got) {
		return usagef("--output is %q: use one of %s", got, strings.Join(formats, ", "))
	}
	return nil
}

// plural counts n things: "1 event", "2 events", "0 events".
func plural[N ~int | ~int64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// appendEventJSON renders an event as one line of NDJSON — the format
// append --file reads:
//
//	{"seq":1,"ts":"…","kind":"…","host_id":"…","rollout_id":"…","event_id":"…","payload":{…}}
//
// Empty ids are left out. The payload is written byte for byte, as stored,
// so that appending the line again (to this log: a duplicate; to another:
// the same event) keeps its bytes. encoding/json cannot do that: it
// compacts raw messages. A payload holding a line break (insignificant
// whitespace, the only place JSON allows a raw one) cannot sit on one line
// as is, and one with whitespace before or after its value would lose it
// (a JSON decoder hands over a field's value without the whitespace
// around it): either goes as "payload_text", a JSON string of the exact
// bytes.
func appendEventJSON(dst []byte, ev eventlog.Event, withSeq bool) []byte {
	dst = append(dst, '{')
	if withSeq {
		dst = fmt.Appendf(dst, `"seq":%d,`, ev.Seq)
	}
	dst = append(dst, `"ts":`...)
	dst = appendJSONString(dst, ev.TS.UTC().Format(time.RFC3339Nano))
	dst = append(dst, `,"kind":`...)
	dst = appendJSONString(dst, string(ev.Kind))
	for _, f := range []struct{ name, v string }{{"host_id", ev.HostID}, {"rollout_id", ev.RolloutID}, {"event_id", ev.EventID}} {
		if f.v != "" {
			dst = append(dst, `,"`+f.name+`":`...)
			dst = appendJSONString(dst, f.v)
		}
	}
	if p := ev.Payload; bytes.ContainsAny(p, "\r\n") || len(p) > 0 && (isJSONSpace(p[0]) || isJSONSpace(p[len(p)-1])) {
		dst = append(dst, `,"payload_text":`...)
		dst = appendJSONString(dst, string(ev.Payload))
	} else {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, ev.Payload...)
	}
	return append(dst, '}')
}

// isJSONSpace reports whether c is insignificant whitespace in JSON.
func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func appendJSONString(dst []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// eventWriter prints events in one of the output formats, as they come.
type eventWriter struct {
	w      io.Writer
	format string
	n      int
	buf    []byte
}

func newEventWriter(w io.Writer, format string) *eventWriter {
	return &eventWriter{w: w, format: format}
}

const tableHeader = "SEQ       TS                           KIND            HOST          ROLLOUT             EVENT_ID            PAYLOAD"

func (ew *eventWriter) write(ev eventlog.Event) error {
	ew.buf = ew.buf[:0]
	switch ew.format {
	case outputTable:
		if ew.n == 0 {
			ew.buf = append(ew.buf, tableHeader+"\n"...)
		}
		ew.buf = fmt.Appendf(ew.buf, "%-9d %-28s %-15s %-13s %-19s %-19s %s\n", ev.Seq, ev.TS.UTC().Format(time.RFC3339Nano),
			cell(string(ev.Kind), 15), cell(ev.HostID, 13), cell(ev.RolloutID, 19), cell(ev.EventID, 19), cell(compactPayload(ev.Payload), 80))
	case outputJSON:
		if ew.n == 0 {
			ew.buf = append(ew.buf, "[\n  "...)
		} else {
			ew.buf = append(ew.buf, ",\n  "...)
		}
		ew.buf = appendEventJSON(ew.buf, ev, true)
	case outputNDJSON:
		ew.buf = appendEventJSON(ew.buf, ev, true)
		ew.buf = append(ew.buf, '\n')
	}
	ew.n++
	_, err := ew.w.Write(ew.buf)
	return err
}

// close finishes the output (the JSON array's end; "no events" for a
// table).
func (ew *eventWriter) close() error {
	var err error
	switch {
	case ew.format == outputJSON && ew.n == 0:
		_, err = io.WriteString(ew.w, "[]\n")
	case ew.format == outputJSON:
		_, err = io.WriteString(ew.w, "\n]\n")
	}
	return err
}

// cell fits s into width runes for a table, "-" when empty.
func cell(s string, width int) string {
	if s == "" {
		return "-"
	}
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

func compactPayload(p []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, p); err != nil {
		return string(p)
	}
	return buf.String()
}

// seqRanges renders increasing seqs compactly: "1-4, 7, 9-10".
type seqRanges struct {
	r [][2]int64
}

func (s *seqRanges) add(seq int64) {
	if n := len(s.r); n > 0 && s.r[n-1][1]+1 == seq {
		s.r[n-1][1] = seq
		return
	}
	s.r = append(s.r, [2]int64{seq, seq})
}

func (s *seqRanges) contains(seq int64) bool {
	for _, r := range s.r {
		if r[0] <= seq && seq <= r[1] {
			return true
		}
	}
	return false
}

func (s *seqRanges) String() string {
	parts := make([]string, 0, len(s.r))
	for _, r := range s.r {
		if r[0] == r[1] {
			parts = append(parts, fmt.Sprint(r[0]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r[0], r[1]))
		}
	}
	return strings.Join(parts, ", ")
}

// parseTime reads an RFC 3339 timestamp flag.
func parseTime(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, usagef("--%s %q is not an RFC 3339 time: use e.g. 2026-05-16T01:00:00Z", flag, v)
	}
	return t, nil
}
