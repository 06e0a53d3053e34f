package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/redact"
	"github.com/canonlog/canonlog/projection"
)

// ProjectionGroup is the fx value group Module builds the registry from.
// AsProjection adds to it; a service that wants every registered
// projection can read it with a `group:"canonlog.projections"` field.
const ProjectionGroup = "canonlog.projections"

// SuppliedDBName is the fx name under which WithDB and ProvideDB hand
// Module a database the service owns.
const SuppliedDBName = "canonlog.supplied_db"

// connectTimeout bounds opening and pinging the database. fx gives
// constructors no context, and a database behind a black-holed address
// would otherwise hang fx.New with no error.
const connectTimeout = 30 * time.Second

// Module provides canonlog to an fx application:
//
//   - *sqlx.DB: opened from Config.DatabaseURL and closed on stop, or the
//     one supplied with WithDB or ProvideDB, used and left open;
//   - *eventlog.Log: with the registry as its hook, so every append applies
//     the projections in its transaction;
//   - *projection.Registry: every projection of the ProjectionGroup value
//     group (see AsProjection). Two with the same name fail the app;
//   - *projection.Manager: the three assembled, with Migrate, Status,
//     CheckStale, Rebuild and Verify. The log's appends refuse kinds that
//     a projection recorded in the database consumes but the app does not
//     register (see Config.AllowDrift).
//
// It needs an app.Config in the graph: fx.Supply(app.Config{}) for the
// defaults, or fx.Provide(app.ConfigFromEnv). An optional *slog.Logger
// receives the start-up facts; an optional metric.MeterProvider and
// trace.TracerProvider record the log's metrics and trace its appends
// (PrometheusModule provides the first; see docs/fx.md, "Metrics and
// traces").
//
// On start, before any component that depends on the log starts, it
// applies the migrations (unless Config.SkipMigrate) and checks for stale
// projections (Config.Stale). Both run under fx's start timeout (15s by
// default; raise it with fx.StartTimeout when a rebuild on start may take
// longer).
//
// Consumers registered with AsConsumer start after that, each running in
// a goroutine of its own from start to stop (see AsConsumer and
// docs/consumers.md, "Running consumers with fx").
var Module = fx.Module("canonlog",
	fx.Provide(New),
	fx.Invoke(requireLog),
	fx.Invoke(runConsumers),
)

// requireLog makes fx build the log even when nothing depends on it: the
// schema must still be migrated and checked when the module is included.
func requireLog(*eventlog.Log) {}

// Params are Module's dependencies.
type Params struct {
	fx.In

	Lifecycle fx.Lifecycle
	Config    Config
	// Logger receives the start-up facts. Optional: nothing is logged
	// without one.
	Logger *slog.Logger `optional:"true"`
	// MeterProvider records the log's metrics, and the manager's
	// (see eventlog.Config): PrometheusModule provides one, or the
	// service provides its own SDK provider. Optional: without one
	// nothing is recorded.
	MeterProvider metric.MeterProvider `optional:"true"`
	// TracerProvider traces the log's appends (see eventlog.Config),
	// each span a child of the span in the caller's context. Optional:
	// without one nothing is traced.
	TracerProvider trace.TracerProvider `optional:"true"`
	// DB is a database the service owns (WithDB, ProvideDB). Optional:
	// without one Module opens Config.DatabaseURL.
	DB *sqlx.DB `name:"canonlog.supplied_db" optional:"true"`
	// Projections are the registered projections, in no particular order.
	Projections []projection.Projection `group:"canonlog.projections"`
}

// Result is what Module provides.
type Result struct {
	fx.Out

	DB       *sqlx.DB
	Log      *eventlog.Log
	Registry *projection.Registry
	Manager  *projection.Manager
}

// New is Module's constructor. It validates the configuration and the
// projections before it opens anything, opens the database (or takes the
// supplied one) and builds the log, and appends to the lifecycle the start
// hook (migrations, stale check) and the stop hook (release the log's
// statements, close the database if it opened it). It does nothing else on
// its own: without fx, pass any fx.Lifecycle (fxtest.NewLifecycle) and run
// its hooks.
func New(p Params) (Result, error) {
	if err := p.Config.validate(); err != nil {
		return Result{}, err
	}
	reg, err := newRegistry(p.Projections)
	if err != nil {
		return Result{}, err
	}
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	db, owned := p.DB, false
	if db == nil {
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		if db, err = eventlog.OpenDB(ctx, p.Config.databaseURL()); err != nil {
			// OpenDB shows the URL redacted; this catches a secret any
			// other part of its error (the driver's) might quote.
			err = redact.Error(err, p.Config.databaseURL())
			return Result{}, fmt.Errorf("app: open the database (Config.DatabaseURL, %s): %w", EnvDatabaseURL, err)
		}
		owned = true
		sizePool(db, p.Config)
	}
	m, err := projection.NewManager(db, reg, &projection.ManagerConfig{
		Log:        logConfig(p, db, owned),
		AllowDrift: p.Config.AllowDrift,
	})
	if err != nil {
		if owned {
			_ = db.Close()
		}
		if !owned {
			err = fmt.Errorf("the database supplied with app.WithDB or app.ProvideDB: %w", err)
		}
		return Result{}, fmt.Errorf("app: %w", err)
	}

	s := &starter{cfg: p.Config, db: db, owned: owned, m: m, logger: logger}
	p.Lifecycle.Append(fx.Hook{OnStart: s.start, OnStop: s.stop})
	return Result{DB: db, Log: m.Log(), Registry: reg, Manager: m}, nil
}

// sizePool applies Config.MaxOpenConns and MaxIdleConns, with their
// defaults, to a pool New opened: on PostgreSQL, where eventlog.OpenDB
// leaves the number of connections unlimited, and on a SQLite file; a
// private in-memory SQLite database keeps its single connection.
func sizePool(db *sqlx.DB, c Config) {
	backend, err := eventlog.BackendOf(db)
	if err != nil {
		return
	}
	maxOpen := c.MaxOpenConns
	switch {
	case backend == eventlog.SQLite && db.Stats().MaxOpenConnections == 1:
		// OpenDB gives sqlite::memory: exactly one connection: each
		// further one would open a database of its own.
		return
	case backend == eventlog.Postgres && maxOpen == 0:
		maxOpen = DefaultMaxOpenConns
	}
	if maxOpen > 0 {
		// Lowers the idle connections OpenDB keeps to maxOpen too.
		db.SetMaxOpenConns(maxOpen)
	}
	if c.MaxIdleConns > 0 {
		// database/sql lowers it to the cap when it is above.
		db.SetMaxIdleConns(c.MaxIdleConns)
	}
}

// logConfig is the configuration of the log New builds on db (owned: New
// opened it from Config.DatabaseURL).
func logConfig(p Params, db *sqlx.DB, owned bool) *eventlog.Config {
	cfg := &eventlog.Config{
		Clock:            p.Config.Clock,
		MaxPayloadBytes:  p.Config.MaxPayloadBytes,
		SerializeAppends: p.Config.SerializeAppends,
		MeterProvider:    p.MeterProvider,
		TracerProvider:   p.TracerProvider,
	}
	if backend, err := eventlog.BackendOf(db); err == nil && backend == eventlog.Postgres && !p.Config.DisableWakeups {
		cfg.Notify = true
		if owned {
			cfg.ListenURL = p.Config.databaseURL()
		}
	}
	return cfg
}

// newRegistry builds the registry from the value group, naming every
// duplicate with the Go types that claim it: fx hands the group over in
// random order, so the registry's own error would name one arbitrarily.
func newRegistry(ps []projection.Projection) (*projection.Registry, error) {
	byName := map[string][]string{}
	for _, p := range ps {
		if p == nil {
			return nil, fmt.Errorf("app: a constructor in the %s group returned a nil projection", ProjectionGroup)
		}
		byName[p.Name()] = append(byName[p.Name()], fmt.Sprintf("%T", p))
	}
	var dups []string
	for name, types := range byName {
		if len(types) > 1 {
			slices.Sort(types)
			dups = append(dups, fmt.Sprintf("%q (%s)", name, strings.Join(types, ", ")))
		}
	}
	if len(dups) > 0 {
		slices.Sort(dups)
		return nil, fmt.Errorf("app: %w: %s: each projection registered with app.AsProjection (or a module such as app.ProbeFailuresModule) needs a unique Name(); register it once, or rename one",
			projection.ErrDuplicateName, strings.Join(dups, "; "))
	}
	// Sort first: the registry sorts too, but its first error (a malformed
	// name, say) should not depend on fx's order.
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b projection.Projection) int { return strings.Compare(a.Name(), b.Name()) })
	reg, err := projection.NewRegistry(ps...)
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	return reg, nil
}

// AsProjection registers an application projection with Module. ctor is
// either a constructor — a function returning a type that implements
// projection.Projection, optionally with an error, and taking any
// dependencies from the graph — or a projection value:
//
//	app.AsProjection(newRolloutProgress)     // func(...) (*RolloutProgress, error)
//	app.AsProjection(hostStatus{})           // a value
//
// It stands for fx.Provide(fx.Annotate(ctor, fx.As(new(projection.Projection)),
// fx.ResultTags(`group:"canonlog.projections"`))). The concrete type is
// not provided to the graph; to use the projection elsewhere too, provide
// it yourself and register it with
// app.AsProjection(func(p *RolloutProgress) *RolloutProgress { return p }).
func AsProjection(ctor any) fx.Option {
	groupTag := fx.ResultTags(`group:"` + ProjectionGroup + `"`)
	switch v := ctor.(type) {
	case nil:
		return fx.Error(errors.New("app.AsProjection(nil): pass a projection or a constructor returning one"))
	case projection.Projection:
		if reflect.TypeOf(v).Kind() != reflect.Func {
			return fx.Provide(fx.Annotate(func() projection.Projection { return v }, groupTag))
		}
	}
	if reflect.TypeOf(ctor).Kind() != reflect.Func {
		return fx.Error(fmt.Errorf("app.AsProjection(%T): pass a value implementing projection.Projection or a constructor returning one", ctor))
	}
	return fx.Provide(fx.Annotate(ctor, fx.As(new(projection.Projection)), groupTag))
}

// WithDB supplies a database the service already has: Module then uses
// it instead of opening Config.DatabaseURL, provides it as *sqlx.DB, and
// leaves it open on stop (the service closes it). db must be opened with
// eventlog.OpenDB or with the "postgres" (lib/pq) or "sqlite"
// (modernc.org/sqlite) driver; SQLite needs the settings OpenDB applies.
func WithDB(db *sqlx.DB) fx.Option {
	if db == nil {
		return fx.Error(errors.New("app.WithDB(nil): pass an open *sqlx.DB, or drop WithDB to let app.Module open Config.DatabaseURL"))
	}
	return fx.Supply(fx.Annotated{Name: SuppliedDBName, Target: db})
}

// ProvideDB is WithDB for a database made by a constructor in the graph
// (func(...) (*sqlx.DB, error)), which owns it and closes it itself.
// Provide it this way instead of with fx.Provide: Module provides
// *sqlx.DB, and fx refuses a type provided twice.
func ProvideDB(ctor any) fx.Option {
	return fx.Provide(fx.Annotate(ctor, fx.ResultTags(`name:"`+SuppliedDBName+`"`)))
}
