package app_test

import (
	"context"
	"encoding/json"
	"fmt"

	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// A service adds the modules, supplies its configuration and uses the log
// and the probe_failures store. Starting migrates the in-memory database;
// stopping closes it.
func Example() {
	var (
		log      *eventlog.Log
		failures *probefailures.Store
	)
	a := fx.New(
		fx.NopLogger,
		fx.Supply(app.Config{DatabaseURL: "sqlite::memory:"}),
		app.Module,
		app.ProbeFailuresModule,
		fx.Populate(&log, &failures),
	)
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = a.Stop(ctx) }()

	for range 2 { // a retried report lands once
		res, err := log.Append(ctx, eventlog.Entry{
			Kind: eventlog.KindAgentEvent, HostID: "web-1", RolloutID: "r-42", EventID: "web-1/probe/77",
			Payload: json.RawMessage(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh-hardening",
				"sub_results":[{"control_id":"CIS-5.2.1","framework":"cis","status":"fail"}]}`),
		})
		if err != nil {
			panic(err)
		}
		fmt.Println("seq", res.Event.Seq, "duplicate", res.Duplicate)
	}
	hosts, err := failures.FailingHosts(ctx, "r-42", "CIS-5.2.1")
	if err != nil {
		panic(err)
	}
	fmt.Println("failing CIS-5.2.1:", hosts)
	// Output:
	// seq 1 duplicate false
	// seq 1 duplicate true
	// failing CIS-5.2.1: [web-1]
}

// AsProjection registers an application projection: a value, or a
// constructor taking its dependencies from the graph.
func ExampleAsProjection() {
	var names []string
	a := fx.New(
		fx.NopLogger,
		fx.Supply(app.Config{DatabaseURL: "sqlite::memory:"}),
		app.Module,
		app.AsProjection(hostSeen{}),
		app.AsProjection(func(app.Config) (agentEventCount, error) { return agentEventCount{}, nil }),
		fx.Invoke(func(reg *projection.Registry) { names = reg.Names() }),
	)
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = a.Stop(ctx) }()
	fmt.Println(names)
	// Output:
	// [agent_event_count host_seen]
}
