package bench

import (
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/fleetgen"
)

// mixSeed is the seed of every run's history, so that runs measure the
// same events.
const mixSeed = 1

// mix is the data of a run: one fleetgen history of Config.Profile for
// every scenario (the fill of read, rebuild and query, the events of the
// write scenarios, rebuild-load's fill), and the agent events of the same
// profile for rebuild-load's writers. Event i depends on i alone, so the
// fill and concurrent writers draw without sharing anything.
type mix struct {
	all      *fleetgen.Generator
	agents   *fleetgen.Generator
	controls []string // the controls the history's probe results can fail
}

func newMix(profile string) (mix, error) {
	all, err := fleetgen.New(&fleetgen.Config{Seed: mixSeed, Profile: profile})
	if err != nil {
		return mix{}, err
	}
	agents, err := fleetgen.New(&fleetgen.Config{Seed: mixSeed, Profile: profile, AgentOnly: true})
	if err != nil {
		return mix{}, err
	}
	return mix{all: all, agents: agents, controls: all.Controls()}, nil
}

// entry returns event i of the history with the given event id ("" for
// none).
func (m mix) entry(i int, eventID string) eventlog.Entry {
	e := m.all.Entry(int64(i))
	e.EventID = eventID
	return e
}

// agentEntry returns agent event i, stamped at: a writer's event.
func (m mix) agentEntry(i int64, at time.Time) eventlog.Entry {
	e := m.agents.Entry(i)
	e.TS = at
	return e
}

// rawTS is how the raw side sends a timestamp: PostgreSQL takes a
// time.Time; SQLite's schema wants fixed-width UTC text.
func rawTS(d eventlog.Backend, t time.Time) any {
	if d == eventlog.SQLite {
		return t.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	return t
}

// rawID is how the raw side sends an optional id: empty is NULL, as
// canonlog stores it (the schema refuses an empty id).
func rawID(s string) any {
	if s == "" {
		return nil
	}
	return s
}
