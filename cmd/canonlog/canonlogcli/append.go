package canonlogcli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
	"github.com/canonlog/canonlog/internal/entryjson"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// An NDJSON input is appended in one transaction, handed to AppendTx in
// chunks so that memory stays bounded however long the input is. A chunk
// of 10,000 entries (as the COPY baseline of docs/performance.md) appended
// 300,000 events in 8.2-8.4 s where chunks of 1,000 took 10.3-11.9 s: each
// AppendTx call has its round trips and statements whatever its size.
// chunkEntries is a variable only so that the package's tests can cross
// chunk boundaries with a few hundred lines (TestMain).
var chunkEntries = 10_000

const (
	chunkBytes = 8 << 20
	// maxLineBytes fits the largest payload written as payload_text, where
	// escaping may double it, plus the other fields.
	maxLineBytes = 2*eventlog.DefaultMaxPayloadBytes + 64<<10
	// listLimit is how many entries (or duplicates) the text output lists
	// one by one; the rest is summarized.
	listLimit = 20
)

type appendOptions struct {
	kind, host, rollout, eventID, ts, payload string
	file                                      string
	output                                    string
	allowDrift                                bool
}

func newAppendCommand(g *globals) *cobra.Command {
	var o appendOptions
	cmd := &cobra.Command{
		Use:   "append",
		Short: "Append one entry from flags, or NDJSON entries as one atomic batch",
		Long: g.named(`append adds events to the log, applying the projections in the same
transaction.

One entry from flags: --kind and --payload are required; --ts defaults to
now. --payload takes JSON, or @FILE to read it from a file (kept byte for
byte).

Many entries with --file PATH (or - for standard input): one JSON object
per line,

  {"kind":"agent_event","ts":"2026-05-16T01:00:00Z","host_id":"h1","rollout_id":"r1","event_id":"h1/7","payload":{…}}

where only kind and payload are required. A "seq" field is ignored, so the
output of '{name} query -o ndjson' is valid input; "payload_text" (a
JSON string holding the payload's exact text) may stand for "payload".
Field names are exact (case-sensitive) and given once each; text that
would not be stored as written (invalid UTF-8, a lone surrogate escape
such as \ud800, the zero time as ts) is refused, never replaced.
All lines are appended in one transaction: if any line is malformed or
refused, nothing is appended and the error names the line.

Entries whose event id is already stored are duplicates: nothing is
written for them, and the output says so.

An entry whose kind is consumed by a projection that the database records
but this binary does not register (another binary, such as the service
owning it, does) is refused, and nothing is appended: that view would
miss the event. Append it with the binary that registers the projection,
or pass --allow-drift: the append then goes ahead, and the projection is
marked stale until that binary rebuilds it.`),
		Example: g.named(`  {name} append --kind agent_event --host host-17 --rollout r-42 --event-id host-17/probe/1 \
      --payload '{"type":"ProbeResult","mode":"enforce","status":"pass","probe_name":"ssh"}'
  {name} append --kind plan_action --payload @action.json
  {name} gen --events 10000 | {name} append --file -`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output, outputTable, outputJSON); err != nil {
				return err
			}
			if o.file != "" {
				for _, name := range []string{"kind", "host", "rollout", "event-id", "ts", "payload"} {
					if cmd.Flags().Changed(name) {
						return usagef("--%s and --file do not mix: put the fields in the file's lines, or drop --file", name)
					}
				}
				return runAppendFile(cmd.Context(), g, o)
			}
			entry, err := o.entry(cmd.Context(), g)
			if err != nil {
				return err
			}
			return runAppendOne(cmd.Context(), g, entry, o)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&o.allowDrift, "allow-drift", false, "append even kinds that projections registered by another binary consume, marking those projections stale until rebuilt")
	fl.StringVar(&o.kind, "kind", "", "event kind, e.g. agent_event (required without --file)")
	completeFlag(cmd, "kind", fixedCompletions(predefinedKinds()...))
	fl.StringVar(&o.host, "host", "", "host id")
	fl.StringVar(&o.rollout, "rollout", "", "rollout id")
	fl.StringVar(&o.eventID, "event-id", "", "idempotency key: an entry with an event id lands once")
	fl.StringVar(&o.ts, "ts", "", "when it happened, RFC 3339 (default now)")
	fl.StringVar(&o.payload, "payload", "", "JSON payload, or @FILE to read it from a file (required without --file)")
	fl.StringVarP(&o.file, "file", "f", "", "append NDJSON entries from PATH, or - for standard input, as one batch")
	addOutputFlag(cmd, &o.output, outputTable, outputJSON)
	return cmd
}

// entry validates the single-entry flags before anything touches the
// database.
func (o appendOptions) entry(ctx context.Context, g *globals) (eventlog.Entry, error) {
	if o.kind == "" || o.payload == "" {
		return eventlog.Entry{}, usagef("append needs --kind and --payload (or --file with NDJSON entries)")
	}
	e := eventlog.Entry{Kind: eventlog.Kind(o.kind), HostID: o.host, RolloutID: o.rollout, EventID: o.eventID}
	if err := e.Kind.Validate(); err != nil {
		return e, usagef("--kind: %v", err)
	}
	payload := []byte(o.payload)
	if name, ok := strings.CutPrefix(o.payload, "@"); ok {
		var err error
		if payload, err = readPayload(ctx, g.stdin, name, eventlog.DefaultMaxPayloadBytes); err != nil {
			return e, err
		}
	}
	e.Payload = payload
	if o.ts != "" {
		ts, err := parseTime("ts", o.ts)
		if err != nil {
			return e, err
		}
		if ts.IsZero() {
			// The log would stamp it with the clock instead.
			return e, usagef("--ts %s is the zero time, which means \"now\": give a later time or leave --ts out", o.ts)
		}
		e.TS = ts
	}
	// Every check the log makes, so that a bad value is a usage error
	// naming its flag rather than a refusal after connecting.
	if err := validateEntry(e, func(field string) string { return "--" + entryFlags[field] }); err != nil {
		return e, usagef("%v", err)
	}
	if err := precheck(e); err != nil {
		return e, usagef("%v", err)
	}
	return e, nil
}

// readPayload reads the payload of --payload @name: standard input for
// "-", else the file. It reads at most limit+1 bytes, so that an endless
// source (/dev/zero, a pipe that is never closed) is refused as too large
// instead of filling memory, and it returns when ctx is done (SIGINT,
// SIGTERM) even while the read blocks. A regular file is refused by its
// size, without reading it.
func readPayload(ctx context.Context, stdin io.Reader, name string, limit int) ([]byte, error) {
	type result struct {
		payload []byte
		size    int64 // of a regular file over the limit; -1 otherwise
		err     error
	}
	done := make(chan result, 1)
	opened := make(chan *os.File, 1)
	go func() {
		in := stdin
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer f.Close()
			opened <- f
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > int64(limit) {
				done <- result{size: fi.Size()}
				return
			}
			in = f
		}
		p, err := io.ReadAll(io.LimitReader(in, int64(limit)+1))
		done <- result{payload: p, size: -1, err: err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		// A read blocked on a pipe or FIFO returns at once at a deadline
		// in the past. open(2) of a FIFO that no writer has opened cannot
		// be interrupted: that goroutine ends with the process, which is
		// about to exit.
		select {
		case f := <-opened:
			_ = f.SetReadDeadline(time.Now())
		default:
		}
		return nil, fmt.Errorf("append: interrupted while reading --payload @%s; nothing was appended", name)
	}
	switch {
	case res.err != nil:
		return nil, fmt.Errorf("--payload @%s: %w", name, res.err)
	case res.size >= 0:
		return nil, usagef("--payload: %w: %d bytes, the limit is %d (@%s)", eventlog.ErrPayloadTooLarge, res.size, limit, name)
	case len(res.payload) > limit:
		return nil, usagef("--payload: %w: larger than the limit of %d bytes (@%s)", eventlog.ErrPayloadTooLarge, limit, name)
	}
	return res.payload, nil
}

// validateEntry makes the log's checks of e (eventlog.Entry.Validate); a
// refusal names the field as name says.
func validateEntry(e eventlog.Entry, name func(field string) string) error {
	err := e.Validate(eventlog.DefaultMaxPayloadBytes)
	var ee *eventlog.EntryError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s: %w", name(ee.Field), ee.Err)
	}
	return err
}

// entryFlags names the flag of each field an *eventlog.EntryError names.
var entryFlags = map[string]string{"kind": "kind", "payload": "payload", "ts": "ts",
	"host_id": "host", "rollout_id": "rollout", "event_id": "event-id"}

// precheck refuses what a registered projection would refuse, so that the
// error can name the line (or flag) instead of a seq that never landed.
func precheck(e eventlog.Entry) error {
	ts := e.TS
	if ts.IsZero() {
		ts = time.Now()
	}
	_, err := probefailures.Rows(nil, eventlog.Event{Kind: e.Kind, TS: ts, HostID: e.HostID, RolloutID: e.RolloutID, Payload: e.Payload})
	if err != nil {
		return fmt.Errorf("refused by %s: %w", probefailures.Name, err)
	}
	return nil
}

// appendReport is what append prints.
type appendReport struct {
	Entries    int             `json:"entries"`
	New        int             `json:"new"`
	Duplicates int             `json:"duplicates"`
	Seqs       [][2]int64      `json:"seq_ranges"` // the new events' seqs, as [first, last] ranges
	Listed     []appendedEntry `json:"results,omitempty"`
	ranges     seqRanges
}

type appendedEntry struct {
	Line      int    `json:"line,omitempty"`
	Seq       int64  `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	EventID   string `json:"event_id,omitempty"`
}

func (r *appendReport) add(line int, res eventlog.Result) {
	r.Entries++
	if res.Duplicate {
		r.Duplicates++
	} else {
		r.New++
		r.ranges.add(res.Event.Seq)
	}
	// Every duplicate is listed (a caller may want to know which), but
	// new entries only while the input is small: their seqs are in Seqs.
	if res.Duplicate || r.Entries <= listLimit {
		r.Listed = append(r.Listed, appendedEntry{Line: line, Seq: res.Event.Seq, Duplicate: res.Duplicate, EventID: res.Event.EventID})
	}
}

func (r *appendReport) print(w io.Writer, output string) error {
	r.Seqs = r.ranges.r
	if r.Seqs == nil {
		r.Seqs = [][2]int64{}
	}
	if output == outputJSON {
		return writeJSON(w, r)
	}
	if r.Entries == 0 {
		_, err := fmt.Fprintln(w, "nothing appended: the input holds no entries")
		return err
	}
	if r.Entries <= listLimit {
		for _, e := range r.Listed {
			prefix := ""
			if e.Line > 0 {
				prefix = fmt.Sprintf("line %d: ", e.Line)
			}
			if e.Duplicate {
				fmt.Fprintf(w, "%sseq %d duplicate (event id %q already stored; nothing written)\n", prefix, e.Seq, e.EventID)
			} else {
				fmt.Fprintf(w, "%sseq %d\n", prefix, e.Seq)
			}
		}
		if r.Entries == 1 {
			return nil
		}
	}
	seqs := "none"
	if r.New > 0 {
		seqs = r.ranges.String()
	}
	fmt.Fprintf(w, "appended %s (seqs %s), %s\n", plural(r.New, "new event", "new events"), seqs, plural(r.Duplicates, "duplicate", "duplicates"))
	if r.Entries > listLimit {
		shown := 0
		for _, e := range r.Listed {
			if !e.Duplicate {
				continue
			}
			if shown == listLimit {
				fmt.Fprintf(w, "  … and %s more (-o json lists them all)\n", plural(r.Duplicates-shown, "duplicate", "duplicates"))
				break
			}
			fmt.Fprintf(w, "  line %d: duplicate of seq %d (event id %q)\n", e.Line, e.Seq, e.EventID)
			shown++
		}
	}
	return nil
}

func runAppendOne(ctx context.Context, g *globals, entry eventlog.Entry, o appendOptions) error {
	output := o.output
	e, err := g.open(ctx, requireSchema, openOptions{allowDrift: o.allowDrift})
	if err != nil {
		return err
	}
	defer e.Close()
	res, err := e.log.Append(ctx, entry)
	if err != nil {
		return fmt.Errorf("append: %w", appendHint(err))
	}
	var r appendReport
	r.add(0, res)
	return r.print(g.stdout, output)
}

// appendHint adds what to do to errors the log reports.
func appendHint(err error) error {
	var ce *eventlog.ConflictError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("%w: use a new event id, or resend the stored event unchanged", err)
	case eventlog.Retryable(err):
		return fmt.Errorf("%w: the database was busy or unreachable; retry (entries with event ids land once)", err)
	case errors.Is(err, projection.ErrNotInstalled):
		return fmt.Errorf("%w: run 'migrate up' first", err)
	case errors.Is(err, projection.ErrUnregistered):
		return fmt.Errorf("%w (--allow-drift)", err)
	}
	return err
}

func runAppendFile(ctx context.Context, g *globals, o appendOptions) error {
	in, name := g.stdin, "standard input"
	if o.file != "-" {
		f, err := os.Open(o.file)
		if err != nil {
			return fmt.Errorf("append: %w", err)
		}
		defer f.Close()
		in, name = f, o.file
	}
	e, err := g.open(ctx, requireSchema, openOptions{allowDrift: o.allowDrift})
	if err != nil {
		return err
	}
	defer e.Close()
	var report appendReport
	err = dbutil.WithTx(ctx, e.db, nil, func(tx *sqlx.Tx) error {
		return appendNDJSON(ctx, e.log, tx, in, &report)
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("append from %s: interrupted, nothing was appended", name)
		}
		return fmt.Errorf("append from %s: %w; nothing was appended", name, err)
	}
	return report.print(g.stdout, o.output)
}

// appendNDJSON reads entries line by line and appends them in tx, a chunk
// at a time. Any error leaves tx to be rolled back.
//
// Reading runs ahead on another goroutine: while the database takes one
// chunk, the next is parsed and checked (the two took about as long as
// each other, one after the other). The errors come in line order all the
// same: a chunk is appended only once every chunk before it has been, and
// a bad line is reported once those before it are in. The reader stops
// when the append fails; on a pipe that never ends it stays blocked until
// the process exits.
func appendNDJSON(ctx context.Context, log *eventlog.Log, tx *sqlx.Tx, in io.Reader, report *appendReport) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type chunk struct {
		entries []eventlog.Entry
		lines   []int
		err     error // a bad line, or the input failing; no entries then
	}
	chunks := make(chan chunk, 1)
	go func() {
		defer close(chunks)
		send := func(c chunk) bool {
			select {
			case chunks <- c:
				return true
			case <-ctx.Done():
				return false
			}
		}
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
		var (
			cur  chunk
			size int
		)
		line := 0
		for sc.Scan() {
			line++
			text := bytes.TrimSpace(sc.Bytes())
			if len(text) == 0 {
				continue
			}
			entry, err := parseEntryLine(text) // copies what it keeps of text
			if err != nil {
				send(chunk{err: fmt.Errorf("line %d: %w", line, err)})
				return
			}
			cur.entries, cur.lines = append(cur.entries, entry), append(cur.lines, line)
			size += len(entry.Payload)
			if len(cur.entries) >= chunkEntries || size >= chunkBytes {
				if !send(cur) {
					return
				}
				cur, size = chunk{}, 0
			}
		}
		if err := sc.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				err = fmt.Errorf("line %d: longer than %d bytes (payloads are limited to %d)", line+1, maxLineBytes, eventlog.DefaultMaxPayloadBytes)
			} else {
				err = fmt.Errorf("read: %w", err)
			}
			send(chunk{err: err})
			return
		}
		if len(cur.entries) > 0 {
			send(cur)
		}
	}()
	for c := range chunks {
		if c.err != nil {
			return c.err
		}
		res, err := log.AppendTx(ctx, tx, c.entries...)
		if err != nil {
			return chunkError(err, c.lines, &report.ranges)
		}
		for i, r := range res {
			report.add(c.lines[i], r)
		}
	}
	return ctx.Err()
}

// chunkError names the line of the entry an append error is about. added
// holds the seqs the earlier chunks of the input took: rolled back with the
// failed input, so an error must not name them as events.
func chunkError(err error, lines []int, added *seqRanges) error {
	var (
		ee *eventlog.EntryError
		ce *eventlog.ConflictError
		ae *projection.ApplyError
	)
	switch {
	case errors.As(err, &ee) && ee.Index < len(lines):
		return fmt.Errorf("line %d: %s: %w", lines[ee.Index], ee.Field, ee.Err)
	case errors.As(err, &ce) && ce.Index < len(lines):
		owner := fmt.Sprintf("event %d", ce.Seq)
		switch {
		case ce.Seq == 0 && ce.OtherIndex < len(lines):
			owner = fmt.Sprintf("line %d", lines[ce.OtherIndex])
		case added.contains(ce.Seq):
			owner = "an earlier line"
		}
		return fmt.Errorf("line %d: event id %q is already used by %s with a different %s: use a new event id, or resend the stored event unchanged",
			lines[ce.Index], ce.EventID, owner, ce.Field)
	case errors.As(err, &ae):
		return fmt.Errorf("lines %d-%d: %w", lines[0], lines[len(lines)-1], err)
	}
	return appendHint(err)
}

// lineFormat is a line of append --file input: what query -o ndjson
// writes, seq included (and ignored).
var lineFormat = entryjson.MustFormat(entryjson.Kind, entryjson.TS, entryjson.HostID, entryjson.RolloutID,
	entryjson.EventID, entryjson.Payload, entryjson.PayloadText, entryjson.Seq)

// parseEntryLine decodes and validates one NDJSON line. The payload keeps
// its bytes exactly as they appear in the line; what cannot be stored as
// given is refused (entryjson).
func parseEntryLine(line []byte) (eventlog.Entry, error) {
	e, err := lineFormat.Decode(line)
	if err != nil {
		return e, err
	}
	if e.Kind == "" {
		return e, errors.New(`"kind" is required`)
	}
	// Every check the log makes, here, so that a bad line is reported as
	// it is read, not when its chunk is appended.
	if err := validateEntry(e, func(field string) string { return field }); err != nil {
		return e, err
	}
	return e, precheck(e)
}
