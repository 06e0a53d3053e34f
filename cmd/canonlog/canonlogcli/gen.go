package canonlogcli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
)

type genOptions struct {
	events    int64
	hosts     int
	rollouts  int
	failRatio float64
	seed      uint64
	out       string
}

func newGenCommand(g *globals) *cobra.Command {
	var o genOptions
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Write a synthetic fleet history as NDJSON, for tests and benchmarks",
		Long: g.named(`gen writes a synthetic control-plane history, one append --file entry per
line: probe results (agent events in the probe_failures format, a share of
them failing), heartbeats, plan actions, effects, manifest polls, verify
outcomes, gate decisions and rollout events, spread over --hosts hosts and
--rollouts rollouts. The same --seed gives the same bytes; every entry has
an event id, so appending the output twice lands it once. Output streams:
a million events take no more memory than ten.`),
		Example: g.named(`  {name} gen --events 100000 | {name} append --file -
  {name} gen --events 1000000 --hosts 5000 --fail-ratio 0.05 --seed 7 > history.ndjson`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !(o.failRatio >= 0 && o.failRatio <= 1) {
				return usagef("--fail-ratio is %v, must be between 0 and 1", o.failRatio)
			}
			w := g.stdout
			if o.out != "" && o.out != "-" {
				f, err := os.Create(o.out)
				if err != nil {
					return fmt.Errorf("gen: %w", err)
				}
				defer f.Close()
				if err := runGen(cmd.Context(), f, o); err != nil {
					return err
				}
				return f.Close()
			}
			return runGen(cmd.Context(), w, o)
		},
	}
	fl := cmd.Flags()
	numFlag(fl, &o.events, "events", "", 1000, bounds{}, "number of events")
	numFlag(fl, &o.hosts, "hosts", "", 50, bounds{min: 1, max: 1_000_000}, "number of hosts")
	numFlag(fl, &o.rollouts, "rollouts", "", 3, bounds{min: 1, max: 100_000}, "number of rollouts")
	fl.Float64Var(&o.failRatio, "fail-ratio", 0.2, "share of probe results that fail (0 to 1)")
	fl.Uint64Var(&o.seed, "seed", 1, "random seed: the same seed writes the same history")
	fl.StringVar(&o.out, "out", "-", "file to write, - for standard output")
	return cmd
}

// genStart is the first event's time: fixed, so output is reproducible.
var genStart = time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC)

type probeDef struct {
	name      string
	framework string
	controls  []string
}

var genProbes = []probeDef{
	{"ssh-hardening", "cis", []string{"CIS-5.2.1", "CIS-5.2.2", "CIS-5.2.3", "CIS-5.2.4"}},
	{"filesystem", "cis", []string{"CIS-1.1.1", "CIS-1.1.2", "CIS-1.1.3"}},
	{"audit-logging", "nist", []string{"AU-2", "AU-3", "AU-12"}},
	{"kernel-params", "stig", []string{"V-230266", "V-230267"}},
}

type genSub struct {
	ControlID string `json:"control_id"`
	Framework string `json:"framework"`
	Status    string `json:"status"`
}

type genProbe struct {
	Type       string   `json:"type"`
	Mode       string   `json:"mode"`
	Status     string   `json:"status"`
	ProbeName  string   `json:"probe_name"`
	ObservedAt string   `json:"observed_at"`
	SubResults []genSub `json:"sub_results"`
}

// generator produces one synthetic event at a time.
type generator struct {
	o   genOptions
	rng *rand.Rand
}

func newGenerator(o genOptions) *generator {
	return &generator{o: o, rng: rand.New(rand.NewPCG(o.seed, 0x63616e6f6e6c6f67))}
}

// event returns the i-th event (call in order: it draws from one stream).
func (gn *generator) event(i int64) (eventlog.Event, error) {
	r := gn.rng
	ts := genStart.Add(time.Duration(i) * 100 * time.Millisecond)
	host := fmt.Sprintf("host-%05d", r.IntN(gn.o.hosts)+1)
	rollout := fmt.Sprintf("rollout-%03d", r.IntN(gn.o.rollouts)+1)
	ev := eventlog.Event{TS: ts, HostID: host, RolloutID: rollout, EventID: fmt.Sprintf("gen/%d/%d", gn.o.seed, i)}
	var payload any
	switch x := r.IntN(100); {
	case x < 55:
		ev.Kind = eventlog.KindAgentEvent
		payload = gn.probe(ts)
	case x < 65:
		ev.Kind = eventlog.KindAgentEvent
		payload = map[string]any{"type": "Heartbeat", "uptime_s": r.IntN(1_000_000), "agent_version": "2.4.1"}
	case x < 75:
		ev.Kind = eventlog.KindPlanAction
		payload = map[string]any{"type": "ApplyConfig", "config": fmt.Sprintf("baseline@v%d", 1+r.IntN(9)), "step": r.IntN(5)}
	case x < 83:
		ev.Kind = eventlog.KindEffect
		payload = map[string]any{"type": "ConfigApplied", "changed_files": r.IntN(12), "duration_ms": r.IntN(5000)}
	case x < 90:
		ev.Kind = eventlog.KindManifestPoll
		payload = map[string]any{"type": "ManifestPoll", "etag": fmt.Sprintf("%08x", r.Uint32()), "changed": r.IntN(4) == 0}
	case x < 95:
		ev.Kind = eventlog.KindVerifyOutcome
		payload = map[string]any{"type": "SignatureVerified", "ok": r.IntN(50) != 0, "key_id": "release-2026"}
	case x < 98:
		ev.Kind, ev.HostID = eventlog.KindGateDecision, ""
		decision := "proceed"
		if r.Float64() < gn.o.failRatio {
			decision = "hold"
		}
		payload = map[string]any{"type": "GateDecision", "wave": 1 + r.IntN(5), "decision": decision}
	default:
		ev.Kind, ev.HostID = eventlog.KindRolloutEvent, ""
		payload = map[string]any{"type": []string{"RolloutStarted", "WaveAdvanced", "RolloutPaused", "RolloutCompleted"}[r.IntN(4)]}
	}
	var err error
	ev.Payload, err = json.Marshal(payload)
	return ev, err
}

// probe returns a probe result: failing (with at least one failing
// control) with probability failRatio; observe mode for a tenth of them.
func (gn *generator) probe(ts time.Time) genProbe {
	r := gn.rng
	def := genProbes[r.IntN(len(genProbes))]
	p := genProbe{Type: probefailures.TypeProbeResult, Mode: "enforce", Status: "pass", ProbeName: def.name,
		ObservedAt: ts.Add(-time.Duration(r.IntN(60)) * time.Second).Format(time.RFC3339)}
	if r.IntN(10) == 0 {
		p.Mode = "observe"
	}
	failing := r.Float64() < gn.o.failRatio
	mustFail := -1
	if failing {
		p.Status = "fail"
		mustFail = r.IntN(len(def.controls))
	}
	for j, c := range def.controls {
		st := "pass"
		if failing && (j == mustFail || r.IntN(4) == 0) {
			st = "fail"
		}
		p.SubResults = append(p.SubResults, genSub{ControlID: c, Framework: def.framework, Status: st})
	}
	return p
}

func runGen(ctx context.Context, w io.Writer, o genOptions) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	gn := newGenerator(o)
	var line []byte
	for i := range o.events {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("gen: interrupted after %s", plural(i, "event", "events"))
			}
		}
		ev, err := gn.event(i)
		if err != nil {
			return fmt.Errorf("gen: %w", err)
		}
		line = appendEventJSON(line[:0], ev, false)
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("gen: write: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("gen: write: %w", err)
	}
	return nil
}
