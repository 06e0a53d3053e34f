package canonlogcli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
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
			if o.hosts < 1 || o.hosts > 10000 {
				return usagef("--hosts is %d, must be between 1 and 10000", o.hosts)
			}
			if err := checkProgress(o.progress); err != nil {
				return err
			}
			return runDemo(cmd.Context(), g, o)
		},
	}
	cmd.Flags().IntVar(&o.hosts, "hosts", 24, "number of hosts in the sample fleet")
	cmd.Flags().StringVar(&o.progress, "progress", progressAuto, "rebuild progress on stderr: auto, bar, lines, none")
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
	fmt.Fprintf(w, "appended %d new events (%d already present); last seq %d\n\n", fresh, len(res)-fresh, last)

	// The compliance gate's question, answered from the probe_failures view.
	store := probefailures.NewStore(e.db)
	for _, rollout := range demoRollouts {
		n, err := store.CountFailingHosts(ctx, rollout)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "compliance gate, rollout %s: %d of %d hosts fail a control\n", rollout, n, o.hosts)
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
			fmt.Fprintf(w, "  %s (%s): %d failing hosts: %s\n", c.ControlID, c.Framework, c.FailingHosts, strings.Join(hosts, ", "))
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
			return exitCodeError{exitDifferent, fmt.Errorf("demo: %s differs from a fresh derivation (%d missing, %d extra): run 'canonlog rebuild %s'", v.Name, v.Missing, v.Extra, v.Name)}
		}
		fmt.Fprintf(w, "verified %s: the live view equals a fresh derivation from the log (%d events replayed)\n", v.Name, v.Events)
	}

	fmt.Fprintf(w, `
What just happened:
  - Every fact landed once in event_log, the append-only log, with a seq.
    Event ids make appends idempotent: run demo again and nothing new lands.
  - probe_failures, the view the gate reads, was written in the same
    transaction as each probe result: one row per failing control of an
    enforce-mode result (observe-mode results write nothing).
  - The rebuild emptied the view and replayed the log from seq 1; verify
    derived it afresh and compared row by row. The log is the truth.

Try next:
  canonlog status
  canonlog query --rollout %s --kind gate_decision
  canonlog tail -f                       (and append from another shell)
  canonlog gen --events 100000 | canonlog append --file -
  canonlog rebuild probe_failures && canonlog verify
`, demoGated)
	return nil
}
