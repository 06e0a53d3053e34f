package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jmoiron/sqlx"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/consumer"
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

// newAgentEventCount is a projection's constructor: fx passes it its
// parameters from the graph.
func newAgentEventCount(app.Config) (agentEventCount, error) { return agentEventCount{}, nil }

// AsProjection registers an application projection: a value, or a
// constructor taking its dependencies from the graph.
func ExampleAsProjection() {
	var names []string
	a := fx.New(
		fx.NopLogger,
		fx.Supply(app.Config{DatabaseURL: "sqlite::memory:"}),
		app.Module,
		app.AsProjection(hostSeen{}),         // a value
		app.AsProjection(newAgentEventCount), // or a constructor: func(deps…) (T, error) or func(deps…) T
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

// newHostSeen is the constructor of a service's own projection.
func newHostSeen() hostSeen { return hostSeen{version: 1} }

// api stands for a service's own component built on the log and a store.
type api struct {
	log      *eventlog.Log
	failures *probefailures.Store
}

func newAPI(log *eventlog.Log, failures *probefailures.Store) *api {
	return &api{log: log, failures: failures}
}

// A service's main function: its configuration from the environment,
// canonlog's modules, its own projection and components. (Not run here:
// Run serves until SIGINT or SIGTERM.)
func ExampleModule() {
	fx.New(
		fx.Provide(app.ConfigFromEnv), // or fx.Supply(app.Config{…})
		app.Module,                    // *sqlx.DB, *eventlog.Log, *projection.Registry
		app.ProbeFailuresModule,       // probe_failures + *probefailures.Store
		app.AsProjection(newHostSeen), // your own projection
		fx.Provide(newAPI),            // uses *eventlog.Log, *probefailures.Store, …
		fx.Invoke(func(*api) {}),
	).Run()
}

// WithDB hands the module a database the service opened; the module uses
// it and leaves it open on stop.
func ExampleWithDB() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:") // or sqlx.Open("postgres", …) with lib/pq
	if err != nil {
		panic(err)
	}
	defer db.Close() // the module leaves it open: its owner closes it
	var log *eventlog.Log
	a := fx.New(fx.NopLogger, fx.Supply(app.Config{}), app.WithDB(db), app.Module, fx.Populate(&log))
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	res, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{}`)})
	if err != nil {
		panic(err)
	}
	fmt.Println("seq", res.Event.Seq)
	if err := a.Stop(ctx); err != nil {
		panic(err)
	}

	var n int
	if err := db.GetContext(ctx, &n, `SELECT COUNT(*) FROM event_log`); err != nil {
		panic(err)
	}
	fmt.Println("events, read after stop:", n)
	// Output:
	// seq 1
	// events, read after stop: 1
}

// newGateAlerts is a consumer's constructor: it takes its dependencies
// from the graph, here a channel standing for the outside world.
func newGateAlerts(notify chan<- string) *consumer.Config {
	return &consumer.Config{
		Name:  "gate_alerts",
		Kinds: []eventlog.Kind{eventlog.KindGateDecision},
		Handle: func(ctx context.Context, ev eventlog.Event) error {
			select { // at least once: the seq is the idempotency key downstream
			case notify <- fmt.Sprintf("gate decision %d for %s: %s", ev.Seq, ev.RolloutID, ev.Payload):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
}

// AsConsumer runs a consumer from the app's start, after the migrations,
// to its stop: here one that tells the outside world about each gate
// decision.
func ExampleAsConsumer() {
	notify := make(chan string)
	var log *eventlog.Log
	a := fx.New(
		fx.NopLogger,
		fx.Supply(app.Config{DatabaseURL: "sqlite::memory:"}, (chan<- string)(notify)),
		app.Module,
		app.AsConsumer(newGateAlerts), // or a *consumer.Config value
		fx.Populate(&log),
	)
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = a.Stop(ctx) }() // stops the consumer, then closes the database
	for _, verdict := range []string{"pass", "fail"} {
		if _, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindGateDecision, RolloutID: "r1",
			Payload: json.RawMessage(`{"verdict":"` + verdict + `"}`)}); err != nil {
			panic(err)
		}
	}
	fmt.Println(<-notify)
	fmt.Println(<-notify)
	// Output:
	// gate decision 1 for r1: {"verdict":"pass"}
	// gate decision 2 for r1: {"verdict":"fail"}
}

// serviceConfig is a service's own configuration.
type serviceConfig struct {
	DatabaseURL string
}

// ProvideDB registers the constructor of the service's database: the
// module uses what it returns, and the constructor's stop hook closes it.
func ExampleProvideDB() {
	var log *eventlog.Log
	a := fx.New(
		fx.NopLogger,
		fx.Supply(app.Config{}, serviceConfig{DatabaseURL: "sqlite::memory:"}),
		app.ProvideDB(func(lc fx.Lifecycle, cfg serviceConfig) (*sqlx.DB, error) {
			db, err := eventlog.OpenDB(context.Background(), cfg.DatabaseURL)
			if err == nil {
				lc.Append(fx.StopHook(db.Close)) // yours to close
			}
			return db, err
		}),
		app.Module,
		fx.Populate(&log),
	)
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = a.Stop(ctx) }()
	res, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{}`)})
	if err != nil {
		panic(err)
	}
	fmt.Println("seq", res.Event.Seq)
	// Output:
	// seq 1
}

// Start refuses a projection whose view an older version of its logic
// built, naming it and the ways past it; with Config.Stale set to
// projection.StaleRebuild it rebuilds the view first.
func Example_staleProjection() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "canonlog-app-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cfg := app.Config{DatabaseURL: "sqlite:" + filepath.Join(dir, "service.db")}

	// Version 1 of host_seen builds its view.
	var log *eventlog.Log
	v1 := fx.New(fx.NopLogger, fx.Supply(cfg), app.Module, app.AsProjection(hostSeen{version: 1}), fx.Populate(&log))
	if err := v1.Start(ctx); err != nil {
		panic(err)
	}
	if _, err := log.Append(ctx, statusReport("web-1", "healthy", "web-1/1")); err != nil {
		panic(err)
	}
	if err := v1.Stop(ctx); err != nil {
		panic(err)
	}

	// Version 2 derives other rows from the same events.
	v2 := fx.New(fx.NopLogger, fx.Supply(cfg), app.Module, app.AsProjection(hostSeen{version: 2}))
	err = v2.Start(ctx)
	fmt.Println(errors.Is(err, projection.ErrStale))
	fmt.Println(err)

	cfg.Stale = projection.StaleRebuild
	var db *sqlx.DB
	v2 = fx.New(fx.NopLogger, fx.Supply(cfg), app.Module, app.AsProjection(hostSeen{version: 2}), fx.Populate(&db))
	if err := v2.Start(ctx); err != nil {
		panic(err)
	}
	defer func() { _ = v2.Stop(ctx) }()
	rows, err := hostSeenRows(ctx, db)
	if err != nil {
		panic(err)
	}
	fmt.Println("rebuilt on start:", rows)
	// Output:
	// true
	// app: start: stale projections, rebuild them before serving (projection.Rebuild with StaleOnly, or the stale policy "rebuild"): host_seen (version 2, built at version 1); or let the service rebuild them on start with Config.Stale = projection.StaleRebuild (CANONLOG_STALE_POLICY=rebuild)
	// rebuilt on start: [web-1=v2:healthy]
}
