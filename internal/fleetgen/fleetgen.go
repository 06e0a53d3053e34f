package fleetgen

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

// Profiles: the shape of the probe results and the default shares.
const (
	// Realistic is a fleet's control-plane history: most probe results
	// pass, a tenth run in observe mode, agents send other events besides
	// probe results, Linux and Windows hosts of two agent generations
	// (the older omits optional fields), escaped strings, and every kind
	// of control-plane event. About 0.28 probe_failures rows per event
	// with the default shares.
	Realistic = "realistic"
	// Dense is the shape canonlog bench used before Realistic: every event
	// an enforce-mode probe result with three sub-results, a third of
	// them failing all three. One probe_failures row per event.
	Dense = "dense"
)

// Profiles returns the profiles' names, the default first.
func Profiles() []string { return []string{Realistic, Dense} }

// Defaults and limits of Config.
const (
	DefaultHosts    = 2000
	DefaultRollouts = 40
	MaxHosts        = 1_000_000
	MaxRollouts     = 100_000
	DefaultInterval = 100 * time.Millisecond
)

// DefaultStart is the timestamp of event 0 when Config.Start is zero.
var DefaultStart = time.Date(2026, 5, 16, 0, 0, 0, 0, time.UTC)

// Shares are the proportions of a history. Each is between 0 and 1.
type Shares struct {
	// Probe is the share of events that are probe results.
	Probe float64
	// Fail is the share of probe results whose status is "fail".
	Fail float64
	// Observe is the share of probe results in observe mode.
	Observe float64
}

// DefaultShares returns a profile's shares, and false for an unknown
// profile.
func DefaultShares(profile string) (Shares, bool) {
	switch profile {
	case Realistic:
		return Shares{Probe: 0.55, Fail: 0.25, Observe: 0.1}, true
	case Dense:
		return Shares{Probe: 1, Fail: 1.0 / 3, Observe: 0}, true
	}
	return Shares{}, false
}

// Config configures a Generator. A nil *Config takes every default.
type Config struct {
	// Seed selects the history: the same seed and Config give the same
	// events, byte for byte. Defaults to 0 (itself a seed).
	Seed uint64

	// Profile is Realistic or Dense. Defaults to Realistic.
	Profile string

	// Hosts is the number of hosts, 1 to MaxHosts. Defaults to
	// DefaultHosts.
	Hosts int

	// Rollouts is the number of rollouts, 1 to MaxRollouts. Defaults to
	// DefaultRollouts.
	Rollouts int

	// Shares override the profile's shares. Defaults to
	// DefaultShares(Profile).
	Shares *Shares

	// AgentOnly restricts the history to agent events (the kind
	// probe_failures reads): event i is drawn from the agent events of
	// the mix, in their proportions among themselves.
	AgentOnly bool

	// Start is the timestamp of event 0; event i is at Start + i×Interval.
	// Defaults to DefaultStart.
	Start time.Time

	// Interval is the time between consecutive events. Defaults to
	// DefaultInterval.
	Interval time.Duration
}

// Generator returns the events of one history. It holds no state that
// changes: its methods are safe for concurrent use, and event i depends
// on the Config and i alone, not on which events were generated before.
type Generator struct {
	cfg    Config
	shares Shares
	base   uint64 // the seed, scattered
	// idPrefix begins every event id: gen/SEED/.
	idPrefix string
	table    []threshold
}

// threshold is one row of the cumulative table that picks an event's
// type: the type of the first row whose upTo exceeds the draw.
type threshold struct {
	upTo float64
	t    eventType
}

// New validates cfg and returns a Generator.
func New(cfg *Config) (*Generator, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Profile == "" {
		c.Profile = Realistic
	}
	shares, ok := DefaultShares(c.Profile)
	if !ok {
		return nil, fmt.Errorf("fleetgen: profile %q: use %s", c.Profile, strings.Join(Profiles(), " or "))
	}
	if c.Shares != nil {
		shares = *c.Shares
	}
	if c.Hosts == 0 {
		c.Hosts = DefaultHosts
	}
	if c.Rollouts == 0 {
		c.Rollouts = DefaultRollouts
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	switch {
	case c.Hosts < 0 || c.Hosts > MaxHosts:
		return nil, fmt.Errorf("fleetgen: Hosts is %d: give 1 to %d, or 0 for %d", c.Hosts, MaxHosts, DefaultHosts)
	case c.Rollouts < 0 || c.Rollouts > MaxRollouts:
		return nil, fmt.Errorf("fleetgen: Rollouts is %d: give 1 to %d, or 0 for %d", c.Rollouts, MaxRollouts, DefaultRollouts)
	case c.Interval < 0:
		return nil, fmt.Errorf("fleetgen: Interval is %s: give a positive duration, or 0 for %s", c.Interval, DefaultInterval)
	}
	for _, s := range []struct {
		name string
		v    float64
	}{{"Probe", shares.Probe}, {"Fail", shares.Fail}, {"Observe", shares.Observe}} {
		if !(s.v >= 0 && s.v <= 1) {
			return nil, fmt.Errorf("fleetgen: Shares.%s is %v: give a share between 0 and 1", s.name, s.v)
		}
	}
	g := &Generator{cfg: c, shares: shares, base: mix64(c.Seed ^ 0x63616e6f6e6c6f67),
		idPrefix: "gen/" + strconv.FormatUint(c.Seed, 10) + "/"}
	g.table = buildTable(shares.Probe, c.AgentOnly)
	return g, nil
}

// buildTable returns the cumulative table of event types: probe results
// take probe, the other types share the rest by their weights; with
// agentOnly, the types of other kinds are left out and the rest scaled
// to fill [0, 1).
func buildTable(probe float64, agentOnly bool) []threshold {
	var total float64
	for _, o := range otherTypes {
		total += o.weight
	}
	type w struct {
		t eventType
		v float64
	}
	ws := []w{{typeProbe, probe}}
	for _, o := range otherTypes {
		if o.agent || !agentOnly {
			ws = append(ws, w{o.t, (1 - probe) * o.weight / total})
		}
	}
	if agentOnly {
		// Probe results keep their proportion to the other agent events.
		var sum float64
		for _, x := range ws {
			sum += x.v
		}
		for i := range ws {
			ws[i].v /= sum
		}
	}
	var (
		table []threshold
		acc   float64
	)
	for _, x := range ws {
		if x.v == 0 {
			continue
		}
		acc += x.v
		table = append(table, threshold{upTo: acc, t: x.t})
	}
	table[len(table)-1].upTo = 2 // a draw is below 1: rounding never falls off the end
	return table
}

// Profile returns the generator's profile.
func (g *Generator) Profile() string { return g.cfg.Profile }

// Shares returns the shares the generator draws with.
func (g *Generator) Shares() Shares { return g.shares }

// Hosts returns the number of hosts.
func (g *Generator) Hosts() int { return g.cfg.Hosts }

// Rollouts returns the number of rollouts.
func (g *Generator) Rollouts() int { return g.cfg.Rollouts }

// Host returns the id of host k, for k from 0 to Hosts()-1: host-00001
// and on.
func (g *Generator) Host(k int) string { return "host-" + pad(k+1, 5) }

// Rollout returns the id of rollout k, for k from 0 to Rollouts()-1:
// rollout-001 and on.
func (g *Generator) Rollout(k int) string { return "rollout-" + pad(k+1, 3) }

// Controls returns the ids of the controls the profile's probe results
// can fail, sorted: the values of probe_failures.control_id.
func (g *Generator) Controls() []string {
	var ids []string
	if g.cfg.Profile == Dense {
		for a := range denseControls + 1 {
			ids = append(ids, "C-"+strconv.Itoa(a))
		}
		for b := range denseNISTControls {
			ids = append(ids, "N-"+strconv.Itoa(b))
		}
	} else {
		for _, p := range slices.Concat(linuxProbes, windowsProbes) {
			ids = append(ids, p.controls...)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// TS returns event i's timestamp: Start + i×Interval.
func (g *Generator) TS(i int64) time.Time { return g.cfg.Start.Add(time.Duration(i) * g.cfg.Interval) }

// Entry returns event i of the history, for i ≥ 0, with an event id of
// the form gen/SEED/i. It depends on the Config and i alone.
func (g *Generator) Entry(i int64) eventlog.Entry {
	r := streamFor(g.base, i)
	ts := g.TS(i)
	e := eventlog.Entry{TS: ts, EventID: g.idPrefix + strconv.FormatInt(i, 10)}
	host := r.intn(g.cfg.Hosts)
	rollout := g.Rollout(r.intn(g.cfg.Rollouts))
	h := g.hostTraits(host)
	x := r.float()
	t := g.table[0].t
	for _, th := range g.table {
		if x < th.upTo {
			t = th.t
			break
		}
	}
	w := writer{b: make([]byte, 0, 384)}
	e.Kind = eventlog.KindAgentEvent
	e.HostID = g.Host(host)
	switch t {
	case typeProbe:
		if g.cfg.Profile == Dense {
			g.denseProbe(&w, &r, ts)
			e.RolloutID = rollout
			break
		}
		g.probe(&w, &r, h, ts)
		// A few probes run on a schedule, outside any rollout; other
		// agent events never belong to one.
		if !r.chance(noRolloutShare) {
			e.RolloutID = rollout
		}
	case typeHeartbeat:
		heartbeat(&w, &r, h)
	case typeInventory:
		inventory(&w, &r, h)
	case typeLogShipped:
		logShipped(&w, &r, h)
	case typeServiceRestarted:
		serviceRestarted(&w, &r, h)
	case typePlanAction:
		e.Kind, e.RolloutID = eventlog.KindPlanAction, rollout
		planAction(&w, &r, h, rollout)
	case typeEffect:
		e.Kind, e.RolloutID = eventlog.KindEffect, rollout
		effect(&w, &r, h)
	case typeManifestPoll:
		e.Kind, e.RolloutID = eventlog.KindManifestPoll, rollout
		manifestPoll(&w, &r)
	case typeVerifyOutcome:
		e.Kind, e.RolloutID = eventlog.KindVerifyOutcome, rollout
		verifyOutcome(&w, &r)
	case typeGateDecision:
		e.Kind, e.HostID, e.RolloutID = eventlog.KindGateDecision, "", rollout
		g.gateDecision(&w, &r)
	default:
		e.Kind, e.HostID, e.RolloutID = eventlog.KindRolloutEvent, "", rollout
		rolloutEvent(&w, &r, g.cfg.Hosts)
	}
	e.Payload = w.b
	return e
}

// hostTraits are what a host is for the whole history: its family and
// its agent's generation, drawn from the seed and the host's number.
type hostTraits struct {
	windows  bool
	oldAgent bool   // agent 2.x: fewer optional fields, observed_at often missing
	version  string // the agent's version, in heartbeats of agents 3.x
}

// A fifth of the hosts run the old agent, 15% run Windows.
func (g *Generator) hostTraits(k int) hostTraits {
	z := mix64(g.base ^ (uint64(k)+1)*0xd1b54a32d192ed03)
	h := hostTraits{windows: z%100 < 15, oldAgent: (z>>8)%100 < 20, version: "3.2.1"}
	if (z>>16)%2 == 0 {
		h.version = "3.3.0"
	}
	return h
}

// pad returns n in decimal with leading zeros to width digits.
func pad(n, width int) string {
	var buf [20]byte
	s := strconv.AppendInt(buf[:0], int64(n), 10)
	if len(s) >= width {
		return string(s)
	}
	return strings.Repeat("0", width-len(s)) + string(s)
}
