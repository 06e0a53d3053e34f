// Package fleetgen generates synthetic control-plane histories: the events
// of a fleet's agents and of the control plane rolling configurations out
// to them. `canonlog gen` writes them as NDJSON and `canonlog bench` fills
// and appends them, so both measure and test the same data.
//
// Event i of a history depends on the Config and i alone: each event draws
// from a random stream seeded by the seed and its number, so writers that
// generate events concurrently, in any order, generate the same history.
//
//	g, err := fleetgen.New(&fleetgen.Config{Seed: 7, Hosts: 5000})
//	if err != nil {
//		return err
//	}
//	for i := range int64(1000) {
//		e := g.Entry(i) // an eventlog.Entry with an event id
//		…
//	}
//
// The Realistic profile (the default) is a fleet's history: 55% of events
// are probe results in the probe_failures format, most of which pass;
// the rest are other agent events (heartbeats, package inventories, logs
// shipped, services restarted) and control-plane events (plan actions,
// effects, manifest polls, verify outcomes, gate decisions, rollout
// events). Payloads average about 260 bytes and carry escaped strings;
// optional fields are sometimes missing. It derives about 0.28
// probe_failures rows per event. The Dense profile is the older benchmark
// shape: every event a probe result, one row per event on average.
//
// Payloads are built by appending bytes, never by encoding maps: a bench
// generates millions of events.
package fleetgen
