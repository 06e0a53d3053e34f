package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
)

type demoOptions struct {
	hosts int
}

func newDemoCommand(g *globals) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Append a small sample rollout and read it back",
		Long: `demo migrates the database, appends the events of a small sample rollout
(plan actions, agent probe results, a gate decision) and reads them back.
Re-running it appends nothing new: every sample event carries an event id.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.hosts < 1 || o.hosts > 10000 {
				return usageError{fmt.Errorf("--hosts is %d, must be between 1 and 10000", o.hosts)}
			}
			return runDemo(cmd.Context(), g, o)
		},
	}
	cmd.Flags().IntVar(&o.hosts, "hosts", 3, "number of hosts in the sample rollout")
	return cmd
}

func runDemo(ctx context.Context, g *globals, o demoOptions) error {
	db, err := g.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	log, err := eventlog.New(db, nil)
	if err != nil {
		return err
	}
	defer log.Close()

	const rollout = "demo-rollout-1"
	start := time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)
	var entries []eventlog.Entry
	add := func(kind eventlog.Kind, host string, at time.Duration, id string, payload any) {
		p, _ := json.Marshal(payload)
		entries = append(entries, eventlog.Entry{Kind: kind, TS: start.Add(at), HostID: host,
			RolloutID: rollout, Payload: p, EventID: id})
	}
	add(eventlog.KindRolloutEvent, "", 0, "demo/rollout/start", map[string]any{"type": "RolloutStarted", "wave": 1})
	for i := range o.hosts {
		host := fmt.Sprintf("host-%03d", i+1)
		at := time.Duration(i+1) * time.Second
		add(eventlog.KindPlanAction, host, at, "demo/plan/"+host, map[string]any{"type": "ApplyConfig", "config": "sshd-hardening@v3"})
		status, sub := "pass", "pass"
		if i%2 == 0 {
			status, sub = "fail", "fail"
		}
		add(eventlog.KindAgentEvent, host, at+time.Second, "demo/probe/"+host, map[string]any{
			"type": "ProbeResult", "mode": "enforce", "status": status, "probe_name": "ssh-hardening",
			"observed_at": start.Add(at + time.Second).Format(time.RFC3339),
			"sub_results": []map[string]string{
				{"control_id": "CIS-5.2.1", "framework": "cis", "status": sub},
				{"control_id": "CIS-5.2.2", "framework": "cis", "status": "pass"},
			},
		})
	}
	add(eventlog.KindGateDecision, "", time.Duration(o.hosts+2)*time.Second, "demo/gate/wave-1", map[string]any{"type": "GateDecision", "wave": 1, "decision": "hold"})

	res, err := log.AppendBatch(ctx, entries)
	if err != nil {
		return err
	}
	fresh := 0
	for _, r := range res {
		if !r.Duplicate {
			fresh++
		}
	}
	last, err := log.LastSeq(ctx)
	if err != nil {
		return err
	}
	w := g.stdout
	fmt.Fprintf(w, "database: %s\n", g.resolveDatabaseURL())
	fmt.Fprintf(w, "appended %d new events (%d already present); last seq %d\n", fresh, len(res)-fresh, last)

	failing, err := log.Query(ctx, eventlog.Filter{RolloutID: rollout, Kinds: []eventlog.Kind{eventlog.KindAgentEvent}, Limit: eventlog.MaxQueryLimit})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "agent events in %s:\n", rollout)
	for _, ev := range failing {
		var p struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal(ev.Payload, &p)
		fmt.Fprintf(w, "  seq %-4d %s  %s  probe %s\n", ev.Seq, ev.TS.Format(time.RFC3339), ev.HostID, p.Status)
	}
	return nil
}
