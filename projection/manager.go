package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pglock"
	"github.com/canonlog/canonlog/migrations"
)

// ManagerConfig configures a Manager. A nil *ManagerConfig means all
// defaults.
type ManagerConfig struct {
	// Log configures the log the Manager builds. Its Hook must be nil: the
	// Manager installs its own, which applies the registry. Defaults to
	// eventlog's defaults.
	Log *eventlog.Config

	// AllowDrift lets appends go ahead when their kind is consumed by a
	// projection the database records but the registry lacks (one that
	// another binary, such as the service owning it, registers). By
	// default such an append is refused with an *UnregisteredError and
	// nothing is written: the other binary's view would silently miss the
	// event. With AllowDrift the append commits without applying that
	// projection and records its seq as the projection's drift seq in the
	// same transaction, so the projection reads as stale (Status.Stale,
	// CheckStale) until its own binary rebuilds it. Defaults to false.
	AllowDrift bool
}

// Manager is canonlog assembled: a database, the log on it, and the
// registry of projections that the log applies on every append. It
// carries the operations over them — Migrate, Status, CheckStale,
// Rebuild, Verify — and guards appends against projections that the
// database records but the registry lacks (see ManagerConfig.AllowDrift).
// The command line, the fx module and the benchmarks all assemble
// canonlog through it. A Manager is safe for concurrent use.
type Manager struct {
	db    *sqlx.DB
	log   *eventlog.Log
	reg   *Registry
	owned bool // OpenManager opened db; Close closes it
	drift bool
	// applied records each projection's apply time inside appends; nil
	// without a MeterProvider in ManagerConfig.Log.
	applied metric.Float64Histogram
	// staleGauge reports the registered projections' staleness until
	// Close; nil without a MeterProvider.
	staleGauge metric.Registration

	// guard is what the database recorded about unregistered projections
	// when it was last read (Load, Migrate, Status); nil before.
	guard atomic.Pointer[guard]
	// loadMu serializes reloads.
	loadMu sync.Mutex
}

// guard is the set of projections the database records that the
// registry lacks, with the kinds each consumes, and the registered
// projections the database has not installed.
type guard struct {
	foreign     []foreignProjection // name order
	uninstalled []*registered       // name order
}

type foreignProjection struct {
	name  string
	all   bool // every kind, or kinds never recorded
	kinds map[eventlog.Kind]bool
	lock  string // its pglock name
}

func (f *foreignProjection) consumes(k eventlog.Kind) bool { return f.all || f.kinds[k] }

// NewManager assembles canonlog on db: it builds the log with the registry
// as its hook. db stays the caller's: Close leaves it open. Call Load (or
// Migrate) before appending, so that appends know the projections other
// binaries installed.
func NewManager(db *sqlx.DB, reg *Registry, cfg *ManagerConfig) (*Manager, error) {
	if db == nil {
		return nil, errors.New("projection: NewManager: db is nil: open one with eventlog.OpenDB")
	}
	if reg == nil {
		return nil, errors.New("projection: NewManager: registry is nil: pass projection.NewRegistry(…) (it may be empty)")
	}
	var c ManagerConfig
	if cfg != nil {
		c = *cfg
	}
	var lc eventlog.Config
	if c.Log != nil {
		lc = *c.Log
	}
	if lc.Hook != nil {
		return nil, errors.New("projection: NewManager: ManagerConfig.Log.Hook is set: leave it nil, the Manager applies the registry itself")
	}
	m := &Manager{db: db, reg: reg, drift: c.AllowDrift}
	if lc.MeterProvider != nil {
		var err error
		if m.applied, err = applyHistogram(lc.MeterProvider); err != nil {
			return nil, fmt.Errorf("projection: NewManager: telemetry: %w", err)
		}
		if m.staleGauge, err = observeStale(lc.MeterProvider, db, reg); err != nil {
			return nil, fmt.Errorf("projection: NewManager: telemetry: %w", err)
		}
	}
	lc.Hook = (*managerHook)(m)
	log, err := eventlog.New(db, &lc)
	if err != nil {
		return nil, fmt.Errorf("projection: NewManager: %w", err)
	}
	m.log = log
	return m, nil
}

// OpenManager opens the database at url (eventlog.OpenDB) and assembles
// canonlog on it; Close closes the database too. It reads which
// projections the database records (Load) when canonlog's schema is
// there; on a database without it, run Migrate first.
func OpenManager(ctx context.Context, url string, reg *Registry, cfg *ManagerConfig) (*Manager, error) {
	db, err := eventlog.OpenDB(ctx, url)
	if err != nil {
		return nil, err
	}
	m, err := NewManager(db, reg, cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	m.owned = true
	return m, nil
}

// DB returns the database.
func (m *Manager) DB() *sqlx.DB { return m.db }

// Log returns the log, whose appends apply the registry.
func (m *Manager) Log() *eventlog.Log { return m.log }

// Registry returns the registry.
func (m *Manager) Registry() *Registry { return m.reg }

// Close releases the log's prepared statements, and closes the database
// when OpenManager opened it.
func (m *Manager) Close() error {
	if m.staleGauge != nil {
		_ = m.staleGauge.Unregister()
	}
	err := m.log.Close()
	if m.owned {
		err = errors.Join(err, m.db.Close())
	}
	return err
}

// Load reads which projections the database records, so that appends
// refuse (or, with AllowDrift, mark) kinds that unregistered projections
// consume. It fails when canonlog's schema is missing or older than this
// code (run Migrate). Migrate and Status load as well; a Manager that
// appends before any of them treats the database as recording no other
// projection.
//
// A projection another binary installs after this Manager loaded is not
// seen until the next Load: install projections (migrate) before the
// binaries that lack them append.
func (m *Manager) Load(ctx context.Context) error {
	_, err := m.load(ctx)
	return err
}

func (m *Manager) load(ctx context.Context) (map[string]checkpoint, error) {
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	cps, err := readCheckpoints(ctx, m.db)
	if err != nil {
		return nil, err
	}
	g := &guard{}
	for name, c := range cps {
		if m.reg.lookup(name) != nil {
			continue
		}
		f := foreignProjection{name: name, lock: pglock.ProjectionLock(name)}
		var kinds []eventlog.Kind
		kinds, f.all = parseKinds(c.Kinds)
		if !f.all {
			f.kinds = make(map[eventlog.Kind]bool, len(kinds))
			for _, k := range kinds {
				f.kinds[k] = true
			}
		}
		g.foreign = append(g.foreign, f)
	}
	slices.SortFunc(g.foreign, func(a, b foreignProjection) int { return strings.Compare(a.name, b.name) })
	entries, _ := m.reg.selectEntries(nil)
	for _, e := range entries {
		if _, ok := cps[e.name]; !ok {
			g.uninstalled = append(g.uninstalled, e)
		}
	}
	m.guard.Store(g)
	return cps, nil
}

// Migrate applies canonlog's core migrations and every registered
// projection's (see the package function Migrate), records the kinds each
// registered projection consumes, and loads what the database records.
func (m *Manager) Migrate(ctx context.Context) ([]migrations.Result, error) {
	res, err := Migrate(ctx, m.log, m.reg)
	if err != nil {
		return res, err
	}
	return res, m.Load(ctx)
}

// Status reports every projection: the registered ones and those the
// database records that the registry lacks (Registered false), with
// their online rebuilds on PostgreSQL (Status.Rebuild).
func (m *Manager) Status(ctx context.Context) (Statuses, error) {
	cps, err := m.load(ctx) // one read serves the guard and the statuses
	if err != nil {
		return nil, err
	}
	sts := statusOf(cps, m.reg)
	if err := addRebuildStates(ctx, m.db, sts); err != nil {
		return nil, err
	}
	return sts, nil
}

// CheckStale applies policy to the stale registered projections (see the
// package function CheckStale).
func (m *Manager) CheckStale(ctx context.Context, policy StalePolicy) (Statuses, error) {
	if _, err := m.load(ctx); err != nil {
		return nil, err
	}
	return CheckStale(ctx, m.log, m.reg, policy)
}

// Rebuild re-derives projections from the log (see the package function
// Rebuild). A name the registry lacks fails before anything is rebuilt;
// when the database records it, the error is an *UnregisteredError saying
// that another binary owns it.
//
// Without names it rebuilds every registered projection that the database
// has installed (see Status.Installed); a named one that is not installed
// fails with a *NotInstalledError.
func (m *Manager) Rebuild(ctx context.Context, opts *RebuildOptions) ([]RebuildResult, error) {
	var o RebuildOptions
	if opts != nil {
		o = *opts
	}
	names, err := m.checkNames(ctx, "rebuild", o.Names)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	o.Names = names
	return Rebuild(ctx, m.log, m.reg, &o)
}

// RebuildStale rebuilds the registered projections that are stale, online
// where they can be (see Rebuild), and returns what it rebuilt: nothing
// when none is stale. It is what StaleRebuildOnline leaves to the caller,
// to run while the service serves. A projection rebuilt in the meantime
// by someone else is skipped.
func (m *Manager) RebuildStale(ctx context.Context, opts *RebuildOptions) ([]RebuildResult, error) {
	var o RebuildOptions
	if opts != nil {
		o = *opts
	}
	o.StaleOnly = true
	return m.Rebuild(ctx, &o)
}

// Verify compares projections with a fresh derivation (see the package
// function Verify). Unknown names fail as in Rebuild.
func (m *Manager) Verify(ctx context.Context, names []string) (VerifyResults, error) {
	names, err := m.checkNames(ctx, "verify", names)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return VerifyResults{}, nil
	}
	return Verify(ctx, m.log, m.reg, names)
}

// checkNames resolves the names an operation works on: those given, or
// every installed registered projection when none are. It fails for a
// name the registry lacks, telling a projection that another binary
// registers from one that exists nowhere, and for a registered one that
// the database has not installed.
func (m *Manager) checkNames(ctx context.Context, op string, names []string) ([]string, error) {
	sts, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		for _, st := range sts {
			if st.Registered && st.Installed {
				names = append(names, st.Name)
			}
		}
		return names, nil
	}
	var elsewhere, notInstalled []string
	for _, n := range names {
		st, ok := sts.Get(n)
		switch {
		case !ok:
			known := "none"
			if names := m.reg.Names(); len(names) > 0 {
				known = strings.Join(names, ", ")
			}
			return nil, fmt.Errorf("%s: %w %q: known projections are %s", op, ErrUnknownProjection, n, known)
		case !st.Registered:
			elsewhere = append(elsewhere, n)
		case !st.Installed:
			notInstalled = append(notInstalled, n)
		}
	}
	if len(elsewhere) > 0 {
		return nil, &UnregisteredError{Op: op, Names: elsewhere}
	}
	if len(notInstalled) > 0 {
		return nil, &NotInstalledError{Op: op, Names: notInstalled}
	}
	return names, nil
}

// CheckSchema makes sure canonlog's tables and the tables of every
// registered projection that the database has installed exist, reading
// only, and loads what the database records. Its error says to migrate.
// A registered projection that is not installed is not an error here:
// appends of its kinds are refused with a *NotInstalledError.
func (m *Manager) CheckSchema(ctx context.Context) error {
	var n int
	if _, err := m.log.LastSeq(ctx); err != nil {
		return &SchemaError{Table: "event_log", Err: err}
	}
	cps, err := m.load(ctx)
	if err != nil {
		return &SchemaError{Table: "canonlog_projections", Err: err}
	}
	for _, p := range m.reg.All() {
		t, ok := p.(Tabler)
		if _, installed := cps[p.Name()]; !ok || !installed {
			continue
		}
		for _, table := range t.Tables() {
			if err := m.db.QueryRowxContext(ctx, `SELECT COUNT(*) FROM `+quoteIdent(table)+` WHERE 1 = 0`).Scan(&n); err != nil {
				return &SchemaError{Table: table, Err: err}
			}
		}
	}
	return nil
}

// managerHook is the log's hook: the registry, behind the guard against
// unregistered projections.
type managerHook Manager

var (
	_ eventlog.LockingHook   = (*managerHook)(nil)
	_ eventlog.SelectiveHook = (*managerHook)(nil)
)

// Consumes implements eventlog.SelectiveHook: a registered projection
// wants kind, or the guard watches it (an unregistered or not installed
// projection consumes it).
func (h *managerHook) Consumes(kind eventlog.Kind) bool {
	if h.reg.Consumes(kind) {
		return true
	}
	g := h.guard.Load()
	if g == nil {
		return false
	}
	for _, e := range g.uninstalled {
		if e.wants(kind) {
			return true
		}
	}
	for i := range g.foreign {
		if g.foreign[i].consumes(kind) {
			return true
		}
	}
	return false
}

// SharedLocks implements eventlog.LockingHook. With AllowDrift it adds the
// locks of unregistered projections that consume the kinds: a rebuild of
// such a projection (which holds its lock exclusively) then never misses
// an event that commits without it, nor the drift mark that comes with
// it.
func (h *managerHook) SharedLocks(kinds []eventlog.Kind) []string {
	locks := h.reg.SharedLocks(kinds)
	if !h.drift {
		return locks
	}
	if g := h.guard.Load(); g != nil {
		for i := range g.foreign {
			f := &g.foreign[i]
			if slices.ContainsFunc(kinds, f.consumes) {
				locks = append(locks, f.lock)
			}
		}
	}
	return locks
}

// AfterAppend implements eventlog.Hook: it refuses (or marks) events that
// unregistered projections consume, then applies the registry.
func (h *managerHook) AfterAppend(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	if g := h.guard.Load(); g != nil && len(g.foreign)+len(g.uninstalled) > 0 {
		if err := (*Manager)(h).guardAppend(ctx, tx, g, events); err != nil {
			return err
		}
	}
	return h.reg.afterAppend(ctx, tx, events, h.applied)
}

func (m *Manager) guardAppend(ctx context.Context, tx *sqlx.Tx, g *guard, events []eventlog.Event) error {
	var notInstalled *NotInstalledError
	for _, e := range g.uninstalled {
		for _, ev := range events {
			if e.wants(ev.Kind) {
				if notInstalled == nil {
					notInstalled = &NotInstalledError{Op: "append", Kind: ev.Kind}
				}
				notInstalled.Names = append(notInstalled.Names, e.name)
				break
			}
		}
	}
	if notInstalled != nil {
		return notInstalled
	}
	var refused *UnregisteredError
	for i := range g.foreign {
		f := &g.foreign[i]
		var last int64
		var kind eventlog.Kind
		for _, ev := range events {
			if f.consumes(ev.Kind) {
				last, kind = ev.Seq, ev.Kind
			}
		}
		if last == 0 {
			continue
		}
		if !m.drift {
			if refused == nil {
				refused = &UnregisteredError{Op: "append", Kind: kind}
			}
			refused.Names = append(refused.Names, f.name)
			continue
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE canonlog_projections SET drift_seq = ? WHERE name = ? AND drift_seq < ?`), last, f.name, last); err != nil {
			return fmt.Errorf("projection %s: record drift: %w", f.name, err)
		}
	}
	if refused != nil {
		return refused
	}
	return nil
}
