package canonlogcli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/redact"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

type demoOptions struct {
	hosts    int
	progress string
}

func newDemoCommand(g *globals) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the main job on a sample fleet history, and explain it",
		Long: `demo creates and migrates the database (by default sqlite:canonlog.db in
the working directory), appends the history of three rollouts over a fleet
(manifest polls, plan actions, effects, probe results with failures, gate
decisions), shows the compliance gate's answer from the probe_failures
view, rebuilds that view from the log with progress, verifies it, and
explains what happened.

Every sample event carries an event id, so running demo again appends
nothing new and shows the same answer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkProgress(o.progress); err != nil {
				return err
			}
			return runDemo(cmd.Context(), g, o)
		},
	}
	numFlag(cmd.Flags(), &o.hosts, "hosts", "", 24, bounds{min: 1, max: 10000}, "number of hosts in the sample fleet")
	addProgressFlag(cmd, &o.progress, "rebuild progress on stderr: auto, bar, lines, none")
	return cmd
}

// The demo's rollouts: two finished, one held by the gate.
var demoRollouts = []string{"demo-2026-05-14-a", "demo-2026-05-15-b", "demo-2026-05-16-c"}

const demoGated = "demo-2026-05-16-c"

// demoHistory returns the sample history. It is the same on every run:
// fixed timestamps and event ids make a second append land nothing.
func demoHistory(hosts int) []eventlog.Entry {
	var entries []eventlog.Entry
	add := func(kind eventlog.Kind, ts time.Time, host, rollout, id string, payload any) {
		p, err := json.Marshal(payload)
		if err != nil {
			panic(err) // the payloads are fixed maps of strings and numbers
		}
		entries = append(entries, eventlog.Entry{Kind: kind, TS: ts, HostID: host, RolloutID: rollout, Payload: p, EventID: id})
	}
	for ri, rollout := range demoRollouts {
		start := time.Date(2026, 5, 14+ri, 1, 0, 0, 0, time.UTC)
		id := func(parts ...string) string { return "demo/" + rollout + "/" + strings.Join(parts, "/") }
		config := fmt.Sprintf("sshd-hardening@v%d", 3+ri)
		add(eventlog.KindRolloutEvent, start, "", rollout, id("start"), map[string]any{"type": "RolloutStarted", "config": config, "hosts": hosts})
		failing := 0
		for i := range hosts {
			host := fmt.Sprintf("host-%03d", i+1)
			at := start.Add(time.Duration(i+1) * 10 * time.Second)
			add(eventlog.KindManifestPoll, at, host, rollout, id(host, "poll"), map[string]any{"type": "ManifestPoll", "config": config, "changed": true})
			add(eventlog.KindPlanAction, at.Add(time.Second), host, rollout, id(host, "plan"), map[string]any{"type": "ApplyConfig", "config": config})
			add(eventlog.KindEffect, at.Add(2*time.Second), host, rollout, id(host, "effect"), map[string]any{"type": "ConfigApplied", "config": config, "changed_files": 1 + i%3})
			// Failures: none in the first rollout, one observe-mode probe in
			// the second (which writes no row), a pattern in the third.
			mode, ssh, fs := "enforce", "pass", "pass"
			switch {
			case ri == 1 && i == 0:
				mode, ssh = "observe", "fail"
			case ri == 2:
				if i%4 == 1 {
					ssh = "fail"
				}
				if i%6 == 2 {
					fs = "fail"
				}
			}
			status := "pass"
			if ssh == "fail" || fs == "fail" {
				status = "fail"
				if mode == "enforce" {
					failing++
				}
			}
			add(eventlog.KindAgentEvent, at.Add(30*time.Second), host, rollout, id(host, "probe"), map[string]any{
				"type": "ProbeResult", "mode": mode, "status": status, "probe_name": "ssh-hardening",
				"observed_at": at.Add(29 * time.Second).Format(time.RFC3339),
				"sub_results": []map[string]string{
					{"control_id": "CIS-5.2.1", "framework": "cis", "status": ssh},
					{"control_id": "CIS-5.2.2", "framework": "cis", "status": "pass"},
					{"control_id": "CIS-1.1.2", "framework": "cis", "status": fs},
				},
			})
			add(eventlog.KindAgentEvent, at.Add(40*time.Second), host, rollout, id(host, "heartbeat"), map[string]any{"type": "Heartbeat", "agent_version": "2.4.1"})
		}
		end := start.Add(time.Duration(hosts+10) * 10 * time.Second)
		decision, next := "proceed", "RolloutCompleted"
		if failing > 0 {
			decision, next = "hold", "RolloutPaused"
		}
		add(eventlog.KindGateDecision, end, "", rollout, id("gate"), map[string]any{"type": "GateDecision", "wave": 1, "decision": decision, "failing_hosts": failing})
		add(eventlog.KindRolloutEvent, end.Add(time.Second), "", rollout, id("end"), map[string]any{"type": next})
	}
	return entries
}

func runDemo(ctx context.Context, g *globals, o demoOptions) error {
	w := g.stdout
	e, err := g.open(ctx, migrateSchema)
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Fprintf(w, "database: %s (migrated)\n", e.url)

	entries := demoHistory(o.hosts)
	res, err := e.log.AppendBatch(ctx, entries)
	if err != nil {
		return fmt.Errorf("demo: append: %w", appendHint(err))
	}
	fresh := 0
	for _, r := range res {
		if !r.Duplicate {
			fresh++
		}
	}
	last, err := e.log.LastSeq(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "appended %s (%d already present); last seq %d\n\n", plural(fresh, "new event", "new events"), len(res)-fresh, last)

	// The compliance gate's question, answered from the probe_failures view.
	store := probefailures.NewStore(e.db)
	for _, rollout := range demoRollouts {
		n, err := store.CountFailingHosts(ctx, rollout)
		if err != nil {
			return err
		}
		verb := "fail"
		if n == 1 {
			verb = "fails"
		}
		fmt.Fprintf(w, "compliance gate, rollout %s: %d of %s %s a control\n", rollout, n, plural(o.hosts, "host", "hosts"), verb)
		if rollout != demoGated {
			continue
		}
		summary, err := store.Summary(ctx, rollout)
		if err != nil {
			return err
		}
		for _, c := range summary {
			hosts, err := store.FailingHosts(ctx, rollout, c.ControlID)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "  %s (%s): %s: %s\n", c.ControlID, c.Framework, plural(c.FailingHosts, "failing host", "failing hosts"), strings.Join(hosts, ", "))
		}
	}
	gate, err := e.log.Query(ctx, eventlog.Filter{RolloutID: demoGated, Kinds: []eventlog.Kind{eventlog.KindGateDecision}, Limit: 1})
	if err != nil {
		return err
	}
	if len(gate) == 1 {
		fmt.Fprintf(w, "  gate decision (seq %d): %s\n", gate[0].Seq, gate[0].Payload)
	}
	fmt.Fprintln(w)

	reports, err := rebuild(ctx, e, g.stderr, rebuildOptions{names: []string{probefailures.Name}, progress: o.progress})
	if err != nil {
		return err
	}
	for _, r := range reports {
		printRebuild(w, r)
	}
	vres, err := projection.Verify(ctx, e.log, e.reg, []string{probefailures.Name})
	if err != nil {
		return fmt.Errorf("demo: verify: %w", err)
	}
	for _, v := range vres {
		if !v.Equal {
			return exitCodeError{exitDifferent, fmt.Errorf("demo: %s differs from a fresh derivation (%d missing, %d extra): run '%s rebuild %s'", v.Name, v.Missing, v.Extra, g.cfg.Name, v.Name)}
		}
		fmt.Fprintf(w, "verified %s: the live view equals a fresh derivation from the log (%s replayed)\n", v.Name, plural(v.Events, "event", "events"))
	}

	fmt.Fprint(w, `
What just happened:
  - Every fact landed once in event_log, the append-only log, with a seq.
    Event ids make appends idempotent: run demo again and nothing new lands.
  - probe_failures, the view the gate reads, was written in the same
    transaction as each probe result: one row per failing control of an
    enforce-mode result (observe-mode results write nothing).
  - The rebuild derived the view afresh from seq 1 (online: into a copy
    beside the live one, swapped in at the end); verify derived it again
    and compared row by row. The log is the truth.

`)
	exe, _ := os.Executable() // "" when unknown: the hints then use the name
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(w, demoHints(invocation(g.cfg.Name, exe, bi), g.resolveDatabaseURL(), g.databaseURLSource()))
	return nil
}

// databaseURLSource says where resolveDatabaseURL found the URL:
// "--database-url", "$CANONLOG_DATABASE_URL", "$DATABASE_URL", or "" for
// the default.
func (g *globals) databaseURLSource() string {
	switch {
	case g.databaseURL != "":
		return "--database-url"
	case os.Getenv("CANONLOG_DATABASE_URL") != "":
		return "$CANONLOG_DATABASE_URL"
	case os.Getenv("DATABASE_URL") != "":
		return "$DATABASE_URL"
	}
	return ""
}

// demoHints returns the demo's "Try next" section: commands that work as
// copied. They run the binary as it was run (invocation) on the database
// the demo used, raw, which came from source (databaseURLSource). A URL
// other than the default goes on each command line, redacted. When that
// hid a secret, the command lines would carry the placeholder instead:
// a URL from the environment is then left to the environment, and a note
// says how to pass one given with --database-url.
func demoHints(invocation, raw, source string) string {
	db, note := "", ""
	if raw != eventlog.DefaultDatabaseURL {
		red := redact.URL(raw)
		hidden := red != raw
		if !hidden || source == "--database-url" {
			db = " --database-url " + shellQuote(red)
		}
		switch {
		case hidden && source == "--database-url":
			note = "  (the URL's secret shows as " + redact.Hidden + ": put it back, or export CANONLOG_DATABASE_URL and drop --database-url)\n"
		case hidden:
			note = "  (they read the database URL from " + source + ", as the demo did)\n"
		}
	}
	return fmt.Sprintf(`Try next:
  %[1]s status%[2]s
  %[1]s query%[2]s --rollout %[3]s --kind gate_decision
  %[1]s tail%[2]s -f                       (and append from another shell)
  %[1]s gen --events 100000 | %[1]s append%[2]s --file -
  %[1]s rebuild%[2]s probe_failures && %[1]s verify%[2]s
%[4]s`, invocation, db, demoGated, note)
}

// invocation is how a user runs this binary again: by its name, or, when
// it was started by 'go run' (whose executable is no command a user can
// type), by the same 'go run' from the module's root: "go run
// ./cmd/canonlog".
func invocation(name, exe string, bi *debug.BuildInfo) string {
	if !builtByGoRun(exe) {
		return name
	}
	pkg := "./cmd/" + name
	if bi != nil && bi.Main.Path != "" {
		// The main package's path within the main module.
		if rel, ok := strings.CutPrefix(bi.Path, bi.Main.Path); ok && (rel == "" || rel[0] == '/') {
			pkg = "." + rel
		}
	}
	return "go run " + pkg
}

// goCacheEntry is the name of the build cache's directory for an
// executable: a SHA-256 in hex and "-d".
var goCacheEntry = regexp.MustCompile(`^[0-9a-f]{64}-d$`)

// builtByGoRun reports whether exe is where 'go run' puts what it builds:
// the go command's temporary directory, $GOTMPDIR (default os.TempDir())
// /go-build…/b001/exe/NAME, or, from Go 1.24 on, the build cache, $GOCACHE
// /40/40793e…-d/NAME. go test's binaries also live in go-build…
// directories, but not under exe.
func builtByGoRun(exe string) bool {
	dir := filepath.Dir(exe)
	switch base := filepath.Base(dir); {
	case base == "exe":
		return strings.Contains(dir, string(filepath.Separator)+"go-build")
	case goCacheEntry.MatchString(base):
		return len(filepath.Base(filepath.Dir(dir))) == 2
	}
	return false
}

// shellQuote quotes s for a POSIX shell when it holds anything but the
// characters a URL usually has that no shell treats specially.
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("@%+=:,./_-", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
