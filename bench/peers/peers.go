package peers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/canonlog/canonlog/internal/redact"
	"github.com/canonlog/canonlog/internal/scratchdb"
)

// Defaults and limits of Config.
const (
	DefaultDatabaseURL      = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultSchemaPrefix     = "canonlog_peers"
	DefaultRounds           = 3
	DefaultSingleEvents     = 3000
	DefaultConcurrentEvents = 12000
	DefaultClients          = 8
	DefaultBatchEvents      = 100000
	DefaultBatchSize        = 500
	DefaultReplayEvents     = 50000

	MaxRounds  = 100
	MaxClients = 64
	// MaxBatchSize keeps watermill-sql's batch, one INSERT with three
	// parameters per message, within PostgreSQL's 65,535 parameters.
	MaxBatchSize = 20000
)

// Config configures a Runner. A nil *Config takes every default; so does
// a zero field.
type Config struct {
	// DatabaseURL names the PostgreSQL database (postgres://… or
	// postgresql://…) in which every side gets schemas of its own; the
	// URL's user must be allowed to create schemas there. Defaults to
	// DefaultDatabaseURL.
	DatabaseURL string

	// SchemaPrefix begins the names of the run's schemas (see
	// internal/scratchdb). Defaults to DefaultSchemaPrefix.
	SchemaPrefix string

	// Rounds is how many times each side runs each scenario; the report
	// gives medians. Defaults to DefaultRounds (3), at most MaxRounds.
	Rounds int

	// SingleEvents is how many events each side appends per round, one
	// call per event, from one client. Defaults to DefaultSingleEvents.
	SingleEvents int

	// ConcurrentEvents is how many events each side appends per round,
	// one call per event, from Clients clients at once. Defaults to
	// DefaultConcurrentEvents; at least Clients.
	ConcurrentEvents int

	// Clients is the number of concurrent clients of the concurrent
	// scenario. Defaults to DefaultClients (8), at most MaxClients.
	Clients int

	// BatchEvents is how many events each side appends per round in calls
	// of BatchSize events, rounded up to a multiple of BatchSize. Defaults
	// to DefaultBatchEvents.
	BatchEvents int

	// BatchSize is the number of events per call of the batch scenario.
	// Defaults to DefaultBatchSize (500), at most MaxBatchSize.
	BatchSize int

	// ReplayEvents is the size of the log each side reads back whole in
	// every round of the replay scenario (written beforehand through the
	// side's batch path, untimed). Defaults to DefaultReplayEvents.
	ReplayEvents int

	// EventIDs gives canonlog's events an event id each, as a service
	// that wants exactly-once appends does: canonlog then keeps its unique
	// index on them, and a single append of a kind no projection consumes
	// is one autocommitted statement (one round trip instead of three).
	// Off by default, as no peer measured here keeps a uniqueness key.
	EventIDs bool

	// Latency, when positive, puts the server across an emulated network:
	// every side connects through a proxy that holds each message for
	// Latency in each direction, so a round trip costs about twice that
	// more. The report gives the round trip measured through it. Zero
	// (the default) connects directly.
	Latency time.Duration

	// Progress, when set, receives a line per side and round as the run
	// goes. Defaults to none.
	Progress io.Writer
}

// Runner runs the comparison. Make one with New.
type Runner struct {
	cfg        Config
	contenders []contender
	proxy      *delayProxy // during Run, when Latency is set
}

// New validates cfg, fills in its defaults and returns a Runner. It
// connects to nothing.
func New(cfg *Config) (*Runner, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = DefaultDatabaseURL
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return nil, fmt.Errorf("peers: database URL %s: the peers are compared on PostgreSQL only: give a postgres:// or postgresql:// URL",
			redact.URL(c.DatabaseURL))
	}
	if c.SchemaPrefix == "" {
		c.SchemaPrefix = DefaultSchemaPrefix
	}
	for _, f := range []struct {
		name     string
		v        *int
		def, max int
	}{
		{"Rounds", &c.Rounds, DefaultRounds, MaxRounds},
		{"Clients", &c.Clients, DefaultClients, MaxClients},
		{"SingleEvents", &c.SingleEvents, DefaultSingleEvents, 0},
		{"ConcurrentEvents", &c.ConcurrentEvents, DefaultConcurrentEvents, 0},
		{"BatchSize", &c.BatchSize, DefaultBatchSize, MaxBatchSize},
		{"BatchEvents", &c.BatchEvents, DefaultBatchEvents, 0},
		{"ReplayEvents", &c.ReplayEvents, DefaultReplayEvents, 0},
	} {
		switch {
		case *f.v < 0:
			return nil, fmt.Errorf("peers: Config.%s is %d: use a positive number, or 0 for the default of %d", f.name, *f.v, f.def)
		case *f.v == 0:
			*f.v = f.def
		case f.max > 0 && *f.v > f.max:
			return nil, fmt.Errorf("peers: Config.%s is %d: at most %d", f.name, *f.v, f.max)
		}
	}
	if c.Latency < 0 || c.Latency > time.Second {
		return nil, fmt.Errorf("peers: Config.Latency is %s: between 0 (none) and 1s", c.Latency)
	}
	if c.Latency > 0 {
		if _, err := target(c.DatabaseURL); err != nil {
			return nil, fmt.Errorf("peers: %w", err)
		}
	}
	if c.ConcurrentEvents < c.Clients {
		return nil, fmt.Errorf("peers: Config.ConcurrentEvents is %d: give each of the %d clients at least one event", c.ConcurrentEvents, c.Clients)
	}
	c.BatchEvents = (c.BatchEvents + c.BatchSize - 1) / c.BatchSize * c.BatchSize
	return &Runner{cfg: c, contenders: contenders}, nil
}

// Config returns the configuration in force, defaults filled in.
func (r *Runner) Config() Config { return r.cfg }

// Run runs every scenario on every available contender and returns the
// report. It works in schemas of its own, each dropped when its scenario
// ends; the last are dropped before Run returns, also on an error or when
// ctx is cancelled.
func (r *Runner) Run(ctx context.Context) (rep *Report, err error) {
	set, err := scratchdb.New(r.cfg.DatabaseURL, &scratchdb.Config{Prefix: r.cfg.SchemaPrefix})
	if err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	defer func() {
		if cerr := set.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("peers: drop the run's schemas: %w", cerr))
		}
	}()
	if err := set.Ping(ctx); err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	rep = &Report{
		Config:     r.cfg,
		Started:    time.Now(),
		Schemas:    set.Name(),
		LoadBefore: loadAverage(),
		Versions:   moduleVersions(),
	}
	if rep.Server, err = serverVersion(ctx, r.cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	if r.cfg.Latency > 0 {
		addr, err := target(r.cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("peers: %w", err)
		}
		if r.proxy, err = startDelayProxy(addr, r.cfg.Latency); err != nil {
			return nil, fmt.Errorf("peers: latency proxy: %w", err)
		}
		defer func() {
			err = errors.Join(err, r.proxy.Close())
			r.proxy = nil
		}()
		if rep.RoundTrip, err = r.proxy.roundTrip(ctx, r.cfg.DatabaseURL); err != nil {
			return nil, fmt.Errorf("peers: latency proxy: %w", err)
		}
	}
	for _, c := range r.contenders {
		rep.Contenders = append(rep.Contenders, Contender{Name: c.name, Module: c.module, Unavailable: c.unavailable})
	}
	for _, sc := range r.scenarios() {
		res, err := r.measure(ctx, set, sc)
		if err != nil {
			return nil, fmt.Errorf("peers: %s: %w", sc.name, err)
		}
		rep.Scenarios = append(rep.Scenarios, res)
	}
	rep.Elapsed = time.Since(rep.Started)
	rep.LoadAfter = loadAverage()
	return rep, nil
}

// connURL returns the URL a side connects with: through the latency
// proxy when there is one.
func (r *Runner) connURL(u string) (string, error) {
	if r.proxy == nil {
		return u, nil
	}
	return r.proxy.url(u)
}

// serverVersion asks the server its version, on a connection of its own.
func serverVersion(ctx context.Context, url string) (string, error) {
	db, err := sql.Open("postgres", url)
	if err != nil {
		return "", err
	}
	defer db.Close()
	var v string
	if err := db.QueryRowContext(ctx, `SHOW server_version`).Scan(&v); err != nil {
		return "", fmt.Errorf("read the server version: %w", redact.Error(err, url))
	}
	return v, nil
}
