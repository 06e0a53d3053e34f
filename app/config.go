package app

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

// Environment variables read by ConfigFromEnv. An unset or empty variable
// leaves its field at the default.
const (
	// EnvDatabaseURL sets Config.DatabaseURL. When it is unset, EnvDatabaseURLFallback is
	// read, the same chain the canonlog command follows, so the command run
	// in a service's environment opens the service's database.
	EnvDatabaseURL = eventlog.EnvDatabaseURL
	// EnvDatabaseURLFallback is read when EnvDatabaseURL is unset.
	EnvDatabaseURLFallback = eventlog.EnvDatabaseURLFallback
	// EnvMigrate is "true" or "false" (also 1/0, t/f): run the migrations
	// on start. Sets Config.SkipMigrate to its negation.
	EnvMigrate = "CANONLOG_MIGRATE"
	// EnvStalePolicy is "refuse", "rebuild", "ignore" or "rebuild-online":
	// Config.Stale.
	EnvStalePolicy = "CANONLOG_STALE_POLICY"
	// EnvMaxPayloadBytes is a positive number of bytes: Config.MaxPayloadBytes.
	EnvMaxPayloadBytes = "CANONLOG_MAX_PAYLOAD_BYTES"
	// EnvSerializeAppends is "true" or "false": Config.SerializeAppends.
	EnvSerializeAppends = "CANONLOG_SERIALIZE_APPENDS"
	// EnvMaxOpenConns is a positive number of connections:
	// Config.MaxOpenConns.
	EnvMaxOpenConns = "CANONLOG_MAX_OPEN_CONNS"
	// EnvMaxIdleConns is a positive number of connections:
	// Config.MaxIdleConns.
	EnvMaxIdleConns = "CANONLOG_MAX_IDLE_CONNS"
	// EnvStaleRebuildFast is "true" or "false": Config.StaleRebuildFast.
	EnvStaleRebuildFast = "CANONLOG_STALE_REBUILD_FAST"
)

// DefaultMaxOpenConns is the most connections Module's pool opens to a
// PostgreSQL database when Config.MaxOpenConns is 0. A pool without a cap
// opens a connection for every concurrent request of a busy service, and
// runs the server out of connections (PostgreSQL's max_connections is 100
// by default) for every other client of it; beyond the cap, callers wait
// for a connection (under their context's deadline).
const DefaultMaxOpenConns = 20

// maxPoolConns caps Config.MaxOpenConns and MaxIdleConns: a higher
// number is a typo, far beyond what any PostgreSQL server accepts.
const maxPoolConns = 10000

// maxPayloadLimit caps Config.MaxPayloadBytes: PostgreSQL cannot store a
// field larger than 1 GiB, so a higher limit would only move the failure
// from a clear validation error to an obscure database one.
const maxPayloadLimit = 1 << 30

// Config configures Module. The zero value is the default configuration
// (fx.Supply(app.Config{})): the embedded SQLite database, migrations on
// start, stale projections refused.
type Config struct {
	// DatabaseURL names the database Module opens (see eventlog.OpenDB:
	// postgres://…, sqlite:PATH, sqlite::memory:). Defaults to
	// eventlog.DefaultDatabaseURL (sqlite:canonlog.db). Ignored when the
	// service supplies its own database with WithDB or ProvideDB.
	DatabaseURL string

	// SkipMigrate stops Module from applying migrations on start. By
	// default (false) canonlog's core migrations and then every registered
	// projection's run before anything else starts. Skip them when a
	// deployment step migrates instead; start then fails if the schema is
	// missing. The field is negative so that the zero Config migrates.
	SkipMigrate bool

	// Stale says what start does about projections built by older logic
	// (a version bump) or never built: projection.StaleRefuse (the
	// default, the zero value) fails start naming them,
	// projection.StaleRebuild rebuilds them before the service starts,
	// projection.StaleIgnore starts anyway and logs a warning, and
	// projection.StaleRebuildOnline starts at once and rebuilds them
	// online in the background, each view swapped in when done (see
	// docs/projections.md, "Deploying a new version without downtime").
	Stale projection.StalePolicy

	// StaleRebuildFast makes the background rebuild of StaleRebuildOnline
	// read ahead, as `canonlog rebuild` does: it ends sooner, and takes
	// about two processor cores from the service while it runs instead
	// of one. By default (false) it is gentle
	// (projection.RebuildOptions.Gentle): the service's appends slow down
	// less meanwhile, and the stale view is served longer
	// (docs/projections.md, "Deploying a new version without downtime").
	// It changes nothing on SQLite, whose online rebuild never reads
	// ahead.
	StaleRebuildFast bool

	// MaxPayloadBytes is the largest payload the log accepts. Defaults to
	// eventlog.DefaultMaxPayloadBytes (1 MiB); at most 1 GiB.
	MaxPayloadBytes int

	// SerializeAppends makes appends commit in seq order, one at a time
	// (see eventlog.Config.SerializeAppends). Defaults to false.
	SerializeAppends bool

	// MaxOpenConns caps the connections of the pool Module opens from
	// DatabaseURL: appends, queries, consumers and rebuilds all take
	// theirs from it, and wait for one when all are in use. On PostgreSQL
	// it defaults to DefaultMaxOpenConns (20); a log that wakes consumers
	// (see DisableWakeups) holds one more connection, outside the pool,
	// for LISTEN while a consumer runs. On a SQLite file it defaults to 4
	// (one writer at a time, readers beside it; see eventlog.OpenDB). A
	// private in-memory SQLite database (sqlite::memory:) always has
	// exactly one connection, whatever this says. At most 10000; ignored
	// when the service supplies its own database with WithDB or
	// ProvideDB, whose pool is the service's to size.
	MaxOpenConns int

	// MaxIdleConns is how many connections the pool keeps open while
	// idle, ready for the next burst. Defaults to 16 on PostgreSQL and 4
	// on a SQLite file (eventlog.OpenDB's settings), never more than
	// MaxOpenConns: with a smaller MaxOpenConns it is lowered to it. Set
	// together with MaxOpenConns it may not exceed it. Ignored where
	// MaxOpenConns is.
	MaxIdleConns int

	// AllowDrift lets appends of kinds that a projection recorded in the
	// database consumes, but that the app does not register (another
	// service's), go ahead and mark that projection stale, instead of
	// being refused. See projection.ManagerConfig.AllowDrift. Defaults to
	// false. Not settable from the environment.
	AllowDrift bool

	// ShutdownOnConsumerError shuts the app down (fx.Shutdowner, exit
	// code 1) when a consumer registered with AsConsumer stops on an
	// error: its handler kept failing under consumer.FailStop, another
	// instance or a reset deposed it, or the database failed. By default
	// (false) the error is logged at ERROR and the app runs on without
	// that consumer until it restarts. Not settable from the environment.
	ShutdownOnConsumerError bool

	// DisableWakeups turns off the wake-ups on PostgreSQL: by default the
	// app's log announces its appends after commit (eventlog.Config.Notify,
	// at most one notification per 5 ms) and, when the app opened the
	// database from DatabaseURL, listens for other processes' (ListenURL),
	// so that consumers handle events within milliseconds instead of at
	// their next poll (docs/consumers.md, "Wake-ups"). Not settable from
	// the environment.
	DisableWakeups bool

	// Clock stamps entries appended without a timestamp. Defaults to
	// eventlog.SystemClock. Not settable from the environment.
	Clock eventlog.Clock
}

// databaseURL returns the URL to open, with the default applied.
func (c Config) databaseURL() string {
	if c.DatabaseURL == "" {
		return eventlog.DefaultDatabaseURL
	}
	return c.DatabaseURL
}

// validate checks the fields the database is not needed for, so that a bad
// Config fails before a connection is opened.
func (c Config) validate() error {
	var errs []error
	switch c.Stale {
	case projection.StaleRefuse, projection.StaleRebuild, projection.StaleIgnore, projection.StaleRebuildOnline:
	default:
		errs = append(errs, fmt.Errorf("stale policy (Config.Stale) is %v: use projection.StaleRefuse, StaleRebuild, StaleIgnore or StaleRebuildOnline", c.Stale))
	}
	if c.MaxPayloadBytes < 0 || c.MaxPayloadBytes > maxPayloadLimit {
		errs = append(errs, fmt.Errorf("payload limit (Config.MaxPayloadBytes) is %d: use 1 to %d bytes, or 0 for the default of %d",
			c.MaxPayloadBytes, maxPayloadLimit, eventlog.DefaultMaxPayloadBytes))
	}
	if c.MaxOpenConns < 0 || c.MaxOpenConns > maxPoolConns {
		errs = append(errs, fmt.Errorf("pool size (Config.MaxOpenConns) is %d: use 1 to %d connections, or 0 for the default (%d on PostgreSQL)",
			c.MaxOpenConns, maxPoolConns, DefaultMaxOpenConns))
	}
	if c.MaxIdleConns < 0 || c.MaxIdleConns > maxPoolConns {
		errs = append(errs, fmt.Errorf("idle connections (Config.MaxIdleConns) is %d: use 1 to %d connections, or 0 for the default",
			c.MaxIdleConns, maxPoolConns))
	} else if c.MaxOpenConns > 0 && c.MaxIdleConns > c.MaxOpenConns {
		errs = append(errs, fmt.Errorf("idle connections (Config.MaxIdleConns) is %d, more than the pool's %d (Config.MaxOpenConns): keep at most MaxOpenConns idle",
			c.MaxIdleConns, c.MaxOpenConns))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("app: invalid config: %w", err)
	}
	return nil
}

// ConfigFromEnv returns the Config described by the CANONLOG_…
// environment variables (see the Env… constants and docs/fx.md); unset
// variables leave the defaults. Every malformed variable is reported, each
// with the values it accepts. Use it as a constructor:
// fx.Provide(app.ConfigFromEnv).
func ConfigFromEnv() (Config, error) {
	return LoadConfig(os.LookupEnv)
}

// LoadConfig is ConfigFromEnv reading variables through lookup (for tests,
// or a source other than the process environment).
func LoadConfig(lookup func(key string) (string, bool)) (Config, error) {
	get := func(key string) string {
		v, _ := lookup(key)
		return strings.TrimSpace(v)
	}
	var (
		c    Config
		errs []error
	)
	// The zero Config stands for the default database.
	if u := eventlog.DatabaseURL("", lookup, ""); u != eventlog.DefaultDatabaseURL {
		c.DatabaseURL = u
	}
	if v := get(EnvMigrate); v != "" {
		migrate, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: use true or false", EnvMigrate, v))
		}
		c.SkipMigrate = !migrate
	}
	if v := get(EnvStalePolicy); v != "" {
		p, err := projection.ParseStalePolicy(strings.ToLower(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: use refuse, rebuild, ignore or rebuild-online", EnvStalePolicy, v))
		}
		c.Stale = p
	}
	if v := get(EnvStaleRebuildFast); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: use true or false", EnvStaleRebuildFast, v))
		}
		c.StaleRebuildFast = b
	}
	if v := get(EnvMaxPayloadBytes); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPayloadLimit {
			errs = append(errs, fmt.Errorf("%s=%q: use a whole number of bytes from 1 to %d (the default is %d)",
				EnvMaxPayloadBytes, v, maxPayloadLimit, eventlog.DefaultMaxPayloadBytes))
		} else {
			c.MaxPayloadBytes = n
		}
	}
	if v := get(EnvSerializeAppends); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: use true or false", EnvSerializeAppends, v))
		}
		c.SerializeAppends = b
	}
	for _, conns := range []struct {
		env   string
		field *int
	}{{EnvMaxOpenConns, &c.MaxOpenConns}, {EnvMaxIdleConns, &c.MaxIdleConns}} {
		if v := get(conns.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxPoolConns {
				errs = append(errs, fmt.Errorf("%s=%q: use a whole number of connections from 1 to %d", conns.env, v, maxPoolConns))
			} else {
				*conns.field = n
			}
		}
	}
	if c.MaxOpenConns > 0 && c.MaxIdleConns > c.MaxOpenConns {
		errs = append(errs, fmt.Errorf("%s=%d is more than %s=%d: keep at most the pool's size idle", EnvMaxIdleConns, c.MaxIdleConns, EnvMaxOpenConns, c.MaxOpenConns))
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("app: configuration from the environment: %w", err)
	}
	return c, nil
}
