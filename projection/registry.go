package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/pglock"
	"github.com/canonlog/canonlog/migrations"
)

// Registry holds the projections a service keeps, and is the eventlog.Hook
// that applies them inside each append's transaction. It is safe for
// concurrent use; iteration is always in name order.
type Registry struct {
	mu      sync.RWMutex
	entries []*registered // sorted by name
}

var _ eventlog.LockingHook = (*Registry)(nil)

// registered is a projection with its optional extensions resolved once.
type registered struct {
	p       Projection
	name    string
	kinds   map[eventlog.Kind]bool // nil: every kind
	markers []string               // PayloadMarker's; nil when not implemented
	batch   BatchApplier           // nil when not implemented
	async   bool                   // Asynchronous: appends do not apply it
}

func (r *registered) wants(k eventlog.Kind) bool { return r.kinds == nil || r.kinds[k] }

func (r *registered) kindList() []eventlog.Kind {
	if r.kinds == nil {
		return nil
	}
	out := make([]eventlog.Kind, 0, len(r.kinds))
	for k := range r.kinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// readOptions selects the events a rebuild or verify of r reads: those
// of its kinds that carry one of its payload markers.
func (r *registered) readOptions(pageSize int) *eventlog.ReadOptions {
	return &eventlog.ReadOptions{PageSize: pageSize, Kinds: r.kindList(), PayloadContains: r.markers}
}

// filter is readOptions as an eventlog.Filter.
func (r *registered) filter() eventlog.Filter {
	return eventlog.Filter{Kinds: r.kindList(), PayloadContains: r.markers}
}

// NewRegistry returns a registry holding ps.
func NewRegistry(ps ...Projection) (*Registry, error) {
	r := &Registry{}
	for _, p := range ps {
		if err := r.Register(p); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds p. It fails with ErrInvalidProjection for a nil projection,
// a malformed name, a version below 1 or a malformed kind filter, and with
// ErrDuplicateName when the name is taken.
func (r *Registry) Register(p Projection) error {
	if p == nil {
		return fmt.Errorf("projection: register: %w: nil projection", ErrInvalidProjection)
	}
	name := p.Name()
	if !nameRE.MatchString(name) {
		return fmt.Errorf("projection: register %T: %w: name %q must match %s", p, ErrInvalidProjection, name, nameRE)
	}
	if v := p.Version(); v < 1 {
		return fmt.Errorf("projection: register %s: %w: version %d, must be 1 or more", name, ErrInvalidProjection, v)
	}
	e := &registered{p: p, name: name}
	if kf, ok := p.(KindFilter); ok {
		kinds := kf.Kinds()
		if len(kinds) == 0 {
			return fmt.Errorf("projection: register %s: %w: Kinds() is empty; drop the KindFilter method to receive every kind", name, ErrInvalidProjection)
		}
		e.kinds = make(map[eventlog.Kind]bool, len(kinds))
		for _, k := range kinds {
			if err := k.Validate(); err != nil {
				return fmt.Errorf("projection: register %s: %w: %w", name, ErrInvalidProjection, err)
			}
			e.kinds[k] = true
		}
	}
	if pm, ok := p.(PayloadMarker); ok {
		markers := pm.PayloadMarkers()
		if len(markers) == 0 {
			return fmt.Errorf("projection: register %s: %w: PayloadMarkers() is empty; drop the PayloadMarker method to read every event of its kinds", name, ErrInvalidProjection)
		}
		if err := (eventlog.Filter{PayloadContains: markers}).Validate(); err != nil {
			return fmt.Errorf("projection: register %s: %w: PayloadMarkers: %w", name, ErrInvalidProjection, err)
		}
		e.markers = slices.Clone(markers)
	}
	if b, ok := p.(BatchApplier); ok {
		e.batch = b
	}
	e.async = isAsync(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	i, found := slices.BinarySearchFunc(r.entries, name, func(x *registered, n string) int {
		return cmpString(x.name, n)
	})
	if found {
		return fmt.Errorf("projection: register %s: %w", name, ErrDuplicateName)
	}
	r.entries = slices.Insert(r.entries, i, e)
	return nil
}

// MustRegister is Register for init-time code: it panics on error.
func (r *Registry) MustRegister(p Projection) {
	if err := r.Register(p); err != nil {
		panic(err)
	}
}

// Get returns the projection registered under name.
func (r *Registry) Get(name string) (Projection, bool) {
	e := r.lookup(name)
	if e == nil {
		return nil, false
	}
	return e.p, true
}

// All returns the registered projections in name order.
func (r *Registry) All() []Projection {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Projection, len(r.entries))
	for i, e := range r.entries {
		out[i] = e.p
	}
	return out
}

// Names returns the registered names in order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, len(r.entries))
	for i, e := range r.entries {
		out[i] = e.name
	}
	return out
}

// MigrationSets returns the migration sets of the projections that bring
// their own tables, in name order, each named after its projection.
func (r *Registry) MigrationSets() []migrations.Set {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var sets []migrations.Set
	for _, e := range r.entries {
		if m, ok := e.p.(Migrator); ok {
			set := m.Migrations()
			set.Name = e.name
			sets = append(sets, set)
		}
	}
	return sets
}

func (r *Registry) lookup(name string) *registered {
	r.mu.RLock()
	defer r.mu.RUnlock()
	i, found := slices.BinarySearchFunc(r.entries, name, func(x *registered, n string) int {
		return cmpString(x.name, n)
	})
	if !found {
		return nil
	}
	return r.entries[i]
}

// selectEntries returns the named projections in name order, or all of them
// when names is empty.
func (r *Registry) selectEntries(names []string) ([]*registered, error) {
	if len(names) == 0 {
		r.mu.RLock()
		defer r.mu.RUnlock()
		return slices.Clone(r.entries), nil
	}
	var out []*registered
	for _, n := range names {
		e := r.lookup(n)
		if e == nil {
			return nil, fmt.Errorf("projection: %w: %q (registered: %v)", ErrUnknownProjection, n, r.Names())
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *registered) int { return cmpString(a.name, b.name) })
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SharedLocks implements eventlog.LockingHook: an append holds, in shared
// mode, the lock of every projection that wants one of its kinds, so that
// a rebuild (which takes it exclusively) and appends never interleave. The
// log takes them in the insert statement itself, before AfterAppend runs.
func (r *Registry) SharedLocks(kinds []eventlog.Kind) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var names []string
	for _, e := range r.entries {
		for _, k := range kinds {
			if !e.async && e.wants(k) {
				names = append(names, pglock.ProjectionLock(e.name))
				break
			}
		}
	}
	return names
}

// Consumes implements eventlog.SelectiveHook: whether a projection of
// the registry wants events of kind.
func (r *Registry) Consumes(kind eventlog.Kind) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.ContainsFunc(r.entries, func(e *registered) bool { return !e.async && e.wants(kind) })
}

// AfterAppend implements eventlog.Hook: it applies events to every
// projection that wants them, in name order, inside the append's
// transaction. It relies on the log having taken SharedLocks (which
// eventlog.Log does on PostgreSQL); call it only through a Log. The first
// error aborts the append; it is an *ApplyError naming the projection and
// the event, with Appending set: that event's seq is not stored.
func (r *Registry) AfterAppend(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	return r.afterAppend(ctx, tx, events, nil)
}

// afterAppend is AfterAppend, recording each projection's apply time with
// applied when it is not nil.
func (r *Registry) afterAppend(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event, applied metric.Float64Histogram) error {
	r.mu.RLock()
	entries := r.entries
	r.mu.RUnlock()
	if len(entries) == 0 {
		return nil
	}
	targets := make([]*registered, 0, len(entries))
	for _, e := range entries {
		for _, ev := range events {
			if !e.async && e.wants(ev.Kind) {
				targets = append(targets, e)
				break
			}
		}
	}
	for _, e := range targets {
		var start time.Time
		if applied != nil {
			start = time.Now()
		}
		err := e.apply(ctx, tx, filterKinds(e, events))
		if applied != nil {
			applied.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attrProjection.String(e.name)))
		}
		if err != nil {
			var ae *ApplyError
			if errors.As(err, &ae) {
				ae.Appending = true
			}
			return err
		}
	}
	return nil
}

// filterKinds returns the events e wants; events itself when it wants all.
func filterKinds(e *registered, events []eventlog.Event) []eventlog.Event {
	if e.kinds == nil {
		return events
	}
	all := true
	for _, ev := range events {
		if !e.kinds[ev.Kind] {
			all = false
			break
		}
	}
	if all {
		return events
	}
	out := make([]eventlog.Event, 0, len(events))
	for _, ev := range events {
		if e.kinds[ev.Kind] {
			out = append(out, ev)
		}
	}
	return out
}

// apply runs the projection over events (in seq order), batched when it
// can, and wraps a failure in an *ApplyError.
func (e *registered) apply(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	if len(events) == 0 {
		return nil
	}
	if e.batch != nil && len(events) > 1 {
		if err := e.batch.ApplyBatch(ctx, tx, events); err != nil {
			return e.applyError(events, 0, err)
		}
		return nil
	}
	for _, ev := range events {
		if err := e.p.Apply(ctx, tx, ev); err != nil {
			return e.applyError([]eventlog.Event{ev}, ev.Seq, err)
		}
	}
	return nil
}

// applyError wraps err from applying events; seq names the failing event
// when known, else an EventError inside err may.
func (e *registered) applyError(events []eventlog.Event, seq int64, err error) error {
	ae := &ApplyError{Projection: e.name, Seq: seq, FirstSeq: events[0].Seq, LastSeq: events[len(events)-1].Seq, Err: err}
	var se *seqError
	if errors.As(err, &se) {
		ae.Seq, ae.Err = se.seq, se.err
	}
	return ae
}

// Must returns r, or panics when err is not nil: for building a registry in
// init-time code, as in Must(NewRegistry(a, b)).
func Must(r *Registry, err error) *Registry {
	if err != nil {
		panic(err)
	}
	return r
}
