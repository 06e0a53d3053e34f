package main

import (
	"log/slog"
	"os"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/canonlog/canonlog/app"
)

// DefaultAddr is where fleetd listens without -addr or FLEETD_ADDR.
const DefaultAddr = "127.0.0.1:8080"

// DefaultDatabaseURL is fleetd's embedded default: its own SQLite file,
// so that it never shares a log with `canonlog demo` by accident.
const DefaultDatabaseURL = "sqlite:fleetd.db"

// Config is fleetd's configuration.
type Config struct {
	// Addr is the HTTP listen address. Defaults to DefaultAddr.
	Addr string
	// Canonlog configures the event log (database, migrations, stale
	// policy, payload limit).
	Canonlog app.Config
	// Logger receives fleetd's, canonlog's and fx's logs (fx's at debug
	// level). Defaults to text on stderr.
	Logger *slog.Logger
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
	return c
}

// Options is fleetd's whole fx graph: the canonlog modules, its projection,
// the stores it reads and the HTTP server.
func Options(cfg Config) fx.Option {
	return fx.Options(
		CoreOptions(cfg),
		fx.Provide(newAPI, newHandler, newServer),
		fx.Invoke(func(*server) {}), // the server is what fleetd runs
	)
}

// CoreOptions is fleetd without its HTTP server: the event log, its
// projections (probe_failures and fleetd's rollout_progress) and the stores
// over them. `fleetd rebuild` runs on it.
func CoreOptions(cfg Config) fx.Option {
	cfg = cfg.withDefaults()
	return fx.Options(
		fx.Supply(cfg, cfg.Canonlog, cfg.Logger),
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: cfg.Logger}
			l.UseLogLevel(slog.LevelDebug) // fx's wiring chatter is for debugging
			return l
		}),
		app.Module,
		app.ProbeFailuresModule,
		app.AsProjection(newRolloutProgress),
		fx.Provide(newProgressStore),
	)
}
