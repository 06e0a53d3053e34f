package main

import (
	"log/slog"
	"os"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// DefaultAddr is where fleetd listens without --addr or FLEETD_ADDR.
const DefaultAddr = "127.0.0.1:8080"

// DefaultDatabaseURL is fleetd's embedded default: its own SQLite file,
// so that it never shares a log with `canonlog demo` by accident. Every
// fleetd command opens it when no URL is given, serve and rebuild alike.
const DefaultDatabaseURL = "sqlite:fleetd.db"

// Config is fleetd's configuration.
type Config struct {
	// Addr is the HTTP listen address. Defaults to DefaultAddr.
	Addr string
	// Canonlog configures the event log (database and its pool,
	// migrations, stale policy, payload limit).
	Canonlog app.Config
	// Auth says how callers are authenticated: bearer tokens, client
	// certificates, or nobody (then fleetd serves only on loopback).
	// Defaults to nobody.
	Auth AuthConfig
	// Limits bound the HTTP server's requests: timeouts, header and
	// concurrency limits. Zero fields take their defaults (see Limits).
	Limits Limits
	// NATS configures the forwarder of the log's events to NATS
	// JetStream. Defaults to none.
	NATS NATSConfig
	// Logger receives fleetd's, canonlog's and fx's logs (fx's at debug
	// level): a line per request among them. Defaults to text on stderr.
	Logger *slog.Logger
	// TracerProvider traces fleetd's requests, each in a server span that
	// continues the trace of the request's traceparent header, and the
	// log's appends within them. Defaults to none: nothing is traced and
	// traceparent is ignored.
	TracerProvider trace.TracerProvider
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Canonlog.DatabaseURL == "" {
		c.Canonlog.DatabaseURL = DefaultDatabaseURL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	c.Limits = c.Limits.withDefaults()
	return c
}

// projections are the projections fleetd keeps: the reference
// probe_failures and its own rollout_progress. Its fx app registers them
// (Options) and its operator commands operate them (fleetd rebuild,
// verify, status, append…): both take them from here, so that what the
// service applies and what its operators rebuild can never disagree.
func projections() []projection.Projection {
	return []projection.Projection{probefailures.New(), newRolloutProgress()}
}

// Options is fleetd's whole fx graph: canonlog's module with fleetd's
// projections, the metrics SDK with its Prometheus exporter, the stores
// it reads and the HTTP server.
func Options(cfg Config) fx.Option {
	cfg = cfg.withDefaults()
	if err := cfg.Limits.validate(); err != nil {
		return fx.Error(err)
	}
	ps := projections()
	registered := make([]fx.Option, len(ps))
	for i, p := range ps {
		registered[i] = app.AsProjection(p)
	}
	return fx.Options(
		fx.Supply(cfg, cfg.Canonlog, cfg.Logger),
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: cfg.Logger}
			l.UseLogLevel(slog.LevelDebug) // fx's wiring chatter is for debugging
			// Its errors too: each comes back from fx.New or Start, which
			// serve reports as one line (startupError); fx's own record
			// of it carries the graph's source paths and a stack.
			l.UseErrorLevel(slog.LevelDebug)
			return l
		}),
		app.PrometheusModule, // the log records through it; GET /metrics serves it
		tracerOption(cfg.TracerProvider),
		app.Module,
		// Not app.ProbeFailuresModule: it would register probe_failures a
		// second time. fleetd provides the store over it itself.
		fx.Options(registered...),
		fx.Provide(newFailuresStore, newProgressStore),
		fx.Provide(newAPI, newAuth, newHandler, newServer),
		fx.Invoke(func(*server) {}), // the server is what fleetd runs
		forwardOption(cfg),
	)
}

// tracerOption hands Config.TracerProvider to the graph, where app.Module
// and the handler find it; none leaves it out, and both trace nothing.
func tracerOption(tp trace.TracerProvider) fx.Option {
	if tp == nil {
		return fx.Options()
	}
	return fx.Provide(func() trace.TracerProvider { return tp })
}

// newFailuresStore takes the log only to be built after it, so that its
// users start after the migrations ran.
func newFailuresStore(db *sqlx.DB, _ *eventlog.Log) *probefailures.Store {
	return probefailures.NewStore(db)
}

// newAuth checks the authentication configuration and reads the tokens
// file, so that a bad one fails start.
func newAuth(cfg Config, logger *slog.Logger) (*authenticator, error) {
	if err := cfg.Auth.validate(); err != nil {
		return nil, err
	}
	return newAuthenticator(cfg.Auth, logger)
}
