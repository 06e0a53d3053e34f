package projection

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbutil"
)

// Asynchronous is implemented by a projection that is maintained after
// commit, by a transactional consumer (package consumer), instead of
// inside each append's transaction: appends neither apply it nor take its
// lock, so they do not pay for it, and its view trails the log by the
// consumer's lag. Run its consumer with RunAsync (the fx module does).
//
// The consumer has the projection's name and its kinds, and applies each
// page of events in commit order, exactly once, in the transaction that
// moves its position. Rebuild re-derives the view and sets the
// consumer's position in one transaction; Verify compares the view with
// a derivation of the events the consumer has handled. Both hold the
// projection's lock, which the consumer takes for each page: the
// consumer waits for them, appends never do. See docs/consumers.md,
// "Asynchronous projections".
type Asynchronous interface {
	Asynchronous() bool
}

// isAsync reports whether p is an asynchronous projection.
func isAsync(p Projection) bool {
	a, ok := p.(Asynchronous)
	return ok && a.Asynchronous()
}

// AsyncNames returns the names of the registry's asynchronous
// projections, in name order: those whose consumers a service runs
// (RunAsync).
func (r *Registry) AsyncNames() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var names []string
	for _, e := range r.entries {
		if e.async {
			names = append(names, e.name)
		}
	}
	return names
}

// ErrNotAsync is returned by AsyncConsumer and RunAsync for a projection
// that is not asynchronous.
var ErrNotAsync = errors.New("projection is not asynchronous")

// AsyncConsumer returns the consumer that maintains the asynchronous
// projection name of reg on log: named like the projection, of its kinds
// and version. cfg may set the consumer's other options (PageSize,
// PollInterval, Attempts, MinBackoff, MaxBackoff, OnFailure, Logger); its
// Name, Kinds, Version, FromHead and handlers must be unset. A nil cfg
// means the defaults.
func AsyncConsumer(log *eventlog.Log, reg *Registry, name string, cfg *consumer.Config) (*consumer.Consumer, error) {
	e := reg.lookup(name)
	switch {
	case e == nil:
		return nil, fmt.Errorf("projection: async consumer: %w: %q", ErrUnknownProjection, name)
	case !e.async:
		return nil, fmt.Errorf("projection %s: async consumer: %w", name, ErrNotAsync)
	}
	var c consumer.Config
	if cfg != nil {
		c = *cfg
	}
	if c.Name != "" || c.Kinds != nil || c.Version != 0 || c.FromHead || c.Handle != nil || c.HandleBatch != nil || c.HandleTx != nil {
		return nil, fmt.Errorf("projection %s: async consumer: %w: leave Name, Kinds, Version, FromHead and the handlers unset: they come from the projection",
			name, consumer.ErrInvalidConfig)
	}
	d, err := eventlog.BackendOf(log.DB())
	if err != nil {
		return nil, err
	}
	c.Name, c.Kinds, c.Version = e.name, e.kindList(), e.p.Version()
	c.HandleTx = func(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
		if err := lockShared(ctx, tx, d, e.name); err != nil {
			return err
		}
		return e.apply(ctx, tx, events)
	}
	return consumer.New(log, &c)
}

// RunAsync runs the consumer of the asynchronous projection name
// (AsyncConsumer) until ctx ends, and returns nil then. A rebuild deposes
// it, as it repositions it: RunAsync then takes it over again. It returns
// any other error that stops the consumer: a *consumer.HandlerError under
// FailStop, a database failure that retrying does not mend.
func RunAsync(ctx context.Context, log *eventlog.Log, reg *Registry, name string, cfg *consumer.Config) error {
	c, err := AsyncConsumer(log, reg, name, cfg)
	if err != nil {
		return err
	}
	for {
		err := c.Run(ctx)
		if !errors.Is(err, consumer.ErrDeposed) || ctx.Err() != nil {
			return err
		}
		// Repositioned (a rebuild, a reset): take it over again.
		t := time.NewTimer(asyncRetakeDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// asyncRetakeDelay is RunAsync's pause before it takes its consumer over
// again after being deposed.
const asyncRetakeDelay = 10 * time.Millisecond

// rebuildAsync rebuilds the asynchronous projection e in one transaction
// holding its exclusive lock: it derives the view from every event of its
// kinds that the consumer's follower reads from the beginning, inside the
// transaction, up to the followers' horizon, and sets the consumer's
// position there. The consumer resumes from it after the commit (a
// running instance is deposed, and RunAsync takes it over again).
// Appends never wait.
func rebuildAsync(ctx context.Context, log *eventlog.Log, d eventlog.Backend, e *registered, o RebuildOptions) (RebuildResult, error) {
	start := time.Now()
	res := RebuildResult{Name: e.name, Version: e.p.Version(), Rows: -1, OfflineReason: "asynchronous: the rebuild blocks its consumer, not appends"}
	var total int64
	if o.Progress != nil {
		var err error
		if total, err = log.Count(ctx, eventlog.Filter{Kinds: e.kindList()}); err != nil {
			return RebuildResult{}, fmt.Errorf("projection: rebuild %s: %w", e.name, err)
		}
	}
	err := dbutil.WithTx(ctx, log.DB(), nil, func(tx *sqlx.Tx) error {
		if err := lockExclusive(ctx, tx, d, e.name); err != nil {
			return err
		}
		locked := time.Now()
		defer func() { res.LockHeld = time.Since(locked) }()
		if err := e.p.Reset(ctx, tx); err != nil {
			return fmt.Errorf("projection %s: reset: %w", e.name, err)
		}
		f, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{Filter: eventlog.Filter{Kinds: e.kindList()}, PageSize: o.BatchSize})
		if err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress(Progress{Projection: e.name, Phase: PhaseReplay, Total: total})
		}
		var handled int64
		for {
			events, err := f.PollTx(ctx, tx)
			if err != nil {
				return fmt.Errorf("projection %s: read log: %w", e.name, err)
			}
			if len(events) > 0 {
				if err := e.apply(ctx, tx, events); err != nil {
					return err
				}
				res.Events += int64(len(events))
				handled = events[len(events)-1].Seq
				res.Seq = max(res.Seq, handled)
				if o.Progress != nil {
					o.Progress(Progress{Projection: e.name, Phase: PhaseReplay, Done: res.Events, Total: max(total, res.Events)})
				}
			}
			if f.CaughtUp() {
				break
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := consumer.RepositionTx(ctx, tx, e.name, e.kindList(), e.p.Version(), f.Position(), handled); err != nil {
			return err
		}
		if t, ok := e.p.(Tabler); ok {
			if res.Rows, err = countRows(ctx, tx, t.Tables()); err != nil {
				return fmt.Errorf("projection %s: %w", e.name, err)
			}
		}
		return writeCheckpoint(ctx, tx, e, checkpoint{Version: res.Version, Seq: res.Seq, At: log.Clock().Now()})
	})
	if err != nil {
		return RebuildResult{}, fmt.Errorf("projection: rebuild %s: %w", e.name, err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// handledByConsumer returns, in tx, a function that tells whether the
// consumer of e has handled an event, read from tx: the events of its
// kinds that tx sees and its follower has not passed are those it has not.
func handledByConsumer(ctx context.Context, log *eventlog.Log, tx *sqlx.Tx, e *registered) (func(seq int64) bool, error) {
	pos, found, err := consumer.PositionTx(ctx, tx, e.name)
	if err != nil {
		return nil, err
	}
	if !found {
		return func(int64) bool { return false }, nil
	}
	f, err := log.NewFollower(pos, &eventlog.FollowOptions{Filter: eventlog.Filter{Kinds: e.kindList()}})
	if err != nil {
		return nil, fmt.Errorf("projection %s: consumer position: %w", e.name, err)
	}
	pending := map[int64]bool{}
	for page, err := range f.DrainTx(ctx, tx) {
		if err != nil {
			return nil, fmt.Errorf("projection %s: read log: %w", e.name, err)
		}
		for _, ev := range page {
			pending[ev.Seq] = true
		}
	}
	return func(seq int64) bool { return !pending[seq] }, nil
}
