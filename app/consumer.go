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

	"go.uber.org/fx"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

// ConsumerGroup is the fx value group Module runs consumers from.
// AsConsumer adds to it.
const ConsumerGroup = "canonlog.consumers"

// AsConsumer registers a consumer with Module. ctor is either a
// constructor — a function returning a *consumer.Config or a
// consumer.Config, optionally with an error, and taking any dependencies
// from the graph (the *sqlx.DB or *eventlog.Log too: unlike a
// projection's, a consumer's constructor runs after Module's) — or a
// config value:
//
//	app.AsConsumer(newGateAlerts)                  // func(...) (*consumer.Config, error)
//	app.AsConsumer(&consumer.Config{Name: "…", …}) // a value
//
// Module makes a consumer.Consumer of each on the app's log and runs it
// from start to stop: see Module.
func AsConsumer(ctor any) fx.Option {
	groupTag := fx.ResultTags(`group:"` + ConsumerGroup + `"`)
	switch v := ctor.(type) {
	case nil:
		return fx.Error(errors.New("app.AsConsumer(nil): pass a *consumer.Config or a constructor returning one"))
	case *consumer.Config:
		if v == nil {
			return fx.Error(errors.New("app.AsConsumer((*consumer.Config)(nil)): pass a *consumer.Config or a constructor returning one"))
		}
		return fx.Provide(fx.Annotate(func() *consumer.Config { return v }, groupTag))
	case consumer.Config:
		return fx.Provide(fx.Annotate(func() *consumer.Config { return &v }, groupTag))
	}
	ft := reflect.TypeOf(ctor)
	configPtr := reflect.TypeFor[*consumer.Config]()
	configVal := reflect.TypeFor[consumer.Config]()
	errType := reflect.TypeFor[error]()
	bad := fx.Error(fmt.Errorf("app.AsConsumer(%T): pass a *consumer.Config, or a constructor returning a *consumer.Config or a consumer.Config, optionally with an error", ctor))
	if ft.Kind() != reflect.Func || ft.NumOut() < 1 || ft.NumOut() > 2 || (ft.NumOut() == 2 && ft.Out(1) != errType) {
		return bad
	}
	switch ft.Out(0) {
	case configPtr:
		return fx.Provide(fx.Annotate(ctor, groupTag))
	case configVal:
		// The group holds pointers: a constructor of the same parameters
		// returning the value's address.
		outs := []reflect.Type{configPtr}
		if ft.NumOut() == 2 {
			outs = append(outs, errType)
		}
		in := make([]reflect.Type, ft.NumIn())
		for i := range in {
			in[i] = ft.In(i)
		}
		fn := reflect.ValueOf(ctor)
		wrapped := reflect.MakeFunc(reflect.FuncOf(in, outs, ft.IsVariadic()), func(args []reflect.Value) []reflect.Value {
			var res []reflect.Value
			if ft.IsVariadic() {
				res = fn.CallSlice(args)
			} else {
				res = fn.Call(args)
			}
			p := reflect.New(configVal)
			p.Elem().Set(res[0])
			return append([]reflect.Value{p}, res[1:]...)
		})
		return fx.Provide(fx.Annotate(wrapped.Interface(), groupTag))
	}
	return bad
}

// consumerParams are what the consumers' runner needs.
type consumerParams struct {
	fx.In

	Lifecycle  fx.Lifecycle
	Shutdowner fx.Shutdowner
	Config     Config
	Log        *eventlog.Log
	Logger     *slog.Logger       `optional:"true"`
	Configs    []*consumer.Config `group:"canonlog.consumers"`
	Registry   *projection.Registry
}

// asyncRetakeDelay is the pause before an asynchronous projection's
// consumer is taken over again after a rebuild deposed it.
const asyncRetakeDelay = 10 * time.Millisecond

// consumerAbortGrace is how long stop waits for a consumer once the stop
// context has ended and its handler's context is cancelled.
const consumerAbortGrace = time.Second

// consumers runs the consumers registered with AsConsumer.
type consumers struct {
	cfg     Config
	log     *eventlog.Log
	logger  *slog.Logger // the module's: start-up facts; discards without one
	errs    *slog.Logger // a consumer that stopped on an error
	configs []*consumer.Config
	shut    fx.Shutdowner
	reg     *projection.Registry // its asynchronous projections' consumers run too

	running []*runningConsumer
}

// runningConsumer is one consumer's Run in its goroutine.
type runningConsumer struct {
	c     *consumer.Consumer
	kinds string // for the log
	// ctx is Run's; cancel ends it: Run starts no new event and returns
	// once the handler in flight has.
	ctx    context.Context
	cancel context.CancelFunc
	// abort ends an external handler's context (stop's context ended).
	abort context.CancelFunc
	done  chan struct{}
	// async: the consumer of an asynchronous projection, taken over again
	// when a rebuild deposes it.
	async bool
}

// runConsumers is Module's invoke for the consumers. It depends on the
// log, so its hooks come after Module's own: the consumers start after
// the migrations and the stale check, and stop before the database is
// closed. It does nothing before start: a consumer's configuration is
// checked there, so that a refused one fails start with everything Module
// opened released.
func runConsumers(p consumerParams) {
	if len(p.Configs) == 0 && len(p.Registry.AsyncNames()) == 0 {
		return
	}
	logger, errs := p.Logger, p.Logger
	if logger == nil {
		// A consumer that stops must not go unnoticed: without a logger in
		// the graph, its ERROR goes to the default logger, as a
		// consumer's own warnings do (consumer.Config.Logger).
		logger, errs = slog.New(slog.DiscardHandler), slog.Default()
	}
	cs := &consumers{cfg: p.Config, log: p.Log, logger: logger, errs: errs, configs: p.Configs, shut: p.Shutdowner, reg: p.Registry}
	p.Lifecycle.Append(fx.Hook{OnStart: cs.start, OnStop: cs.stop})
}

// build makes every consumer, or fails naming the configuration it
// refuses, before any runs.
func (cs *consumers) build() ([]*runningConsumer, error) {
	count := map[string]int{}
	for _, cfg := range cs.configs {
		if cfg == nil {
			return nil, fmt.Errorf("app: start: %w: a constructor in the %s group returned a nil *consumer.Config", consumer.ErrInvalidConfig, ConsumerGroup)
		}
		count[cfg.Name]++
	}
	var dups []string
	asyncs := cs.reg.AsyncNames()
	for _, name := range asyncs {
		count[name]++
	}
	for name, n := range count {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%q (%d times)", name, n))
		}
	}
	if len(dups) > 0 {
		slices.Sort(dups)
		return nil, fmt.Errorf("app: start: %w: consumer name registered more than once with app.AsConsumer, or also an asynchronous projection's: %s: each consumer needs a unique Config.Name, which names its position",
			consumer.ErrInvalidConfig, strings.Join(dups, ", "))
	}
	// fx hands the group over in random order: the first error, and the
	// start order, should not depend on it.
	configs := slices.Clone(cs.configs)
	slices.SortFunc(configs, func(a, b *consumer.Config) int { return strings.Compare(a.Name, b.Name) })
	var out []*runningConsumer
	for _, cfg := range configs {
		c := *cfg
		if c.Logger == nil {
			c.Logger = cs.errs
		}
		runCtx, cancel := context.WithCancel(context.Background())
		abortCtx, abort := context.WithCancel(context.Background())
		r := &runningConsumer{ctx: runCtx, cancel: cancel, abort: abort, done: make(chan struct{}), kinds: kindsList(c.Kinds)}
		out = append(out, r)
		if c.Handle != nil {
			c.Handle = wrapHandle(c.Handle, runCtx, abortCtx)
		}
		if c.HandleBatch != nil {
			c.HandleBatch = wrapHandleBatch(c.HandleBatch, runCtx, abortCtx)
		}
		var err error
		if r.c, err = consumer.New(cs.log, &c); err != nil {
			for _, r := range out {
				r.cancel()
				r.abort()
			}
			return nil, fmt.Errorf("app: start: %w", err)
		}
	}
	for _, name := range asyncs {
		runCtx, cancel := context.WithCancel(context.Background())
		r := &runningConsumer{ctx: runCtx, cancel: cancel, abort: func() {}, done: make(chan struct{}), async: true}
		out = append(out, r)
		var err error
		if r.c, err = projection.AsyncConsumer(cs.log, cs.reg, name, &consumer.Config{Logger: cs.errs}); err != nil {
			for _, r := range out {
				r.cancel()
				r.abort()
			}
			return nil, fmt.Errorf("app: start: %w", err)
		}
		r.kinds = kindsList(r.c.Kinds())
	}
	return out, nil
}

// start checks every consumer and then starts each in a goroutine of its
// own. It does not wait for them: on PostgreSQL a consumer that another
// process runs waits in Run for its turn.
func (cs *consumers) start(ctx context.Context) error {
	running, err := cs.build()
	if err != nil {
		return err
	}
	cs.running = running
	for _, r := range running {
		cs.logger.InfoContext(ctx, "canonlog: consumer started", "consumer", r.c.Name(), "kinds", r.kinds)
		go cs.run(r)
	}
	return nil
}

// wrapHandle gives an external handler a context that Run's cancellation
// does not end, so that the event in flight when the app stops is handled
// to the end (and its position saved), unless stop's own context ends
// first (abort). Once the consumer is stopping it starts no new event.
func wrapHandle(h consumer.HandlerFunc, runCtx, abortCtx context.Context) consumer.HandlerFunc {
	return func(ctx context.Context, ev eventlog.Event) error {
		hctx, done, err := handlerContext(ctx, runCtx, abortCtx)
		if err != nil {
			return err
		}
		defer done()
		return h(hctx, ev)
	}
}

// wrapHandleBatch is wrapHandle for a HandleBatch: the page in flight is
// handled to the end.
func wrapHandleBatch(h consumer.BatchHandlerFunc, runCtx, abortCtx context.Context) consumer.BatchHandlerFunc {
	return func(ctx context.Context, events []eventlog.Event) error {
		hctx, done, err := handlerContext(ctx, runCtx, abortCtx)
		if err != nil {
			return err
		}
		defer done()
		return h(hctx, events)
	}
}

// handlerContext is the context an external handler runs with: ctx
// without its cancellation, ended by abortCtx instead; an error once
// runCtx has ended. Call done when the handler has returned.
func handlerContext(ctx, runCtx, abortCtx context.Context) (hctx context.Context, done func(), err error) {
	if err := runCtx.Err(); err != nil {
		return nil, nil, err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopAfter := context.AfterFunc(abortCtx, cancel)
	return hctx, func() { stopAfter(); cancel() }, nil
}

// run runs one consumer until it returns, and says why it did.
func (cs *consumers) run(r *runningConsumer) {
	defer close(r.done)
	name := r.c.Name()
	err := r.c.Run(r.ctx)
	for r.async && errors.Is(err, consumer.ErrDeposed) && r.ctx.Err() == nil {
		// A rebuild repositioned the projection's consumer: take it over
		// again from there.
		cs.logger.Info("canonlog: async projection's consumer repositioned; taking it over again", "consumer", name)
		select {
		case <-r.ctx.Done():
		case <-time.After(asyncRetakeDelay):
		}
		err = r.c.Run(r.ctx)
	}
	switch {
	case err == nil:
		cs.logger.Info("canonlog: consumer stopped", "consumer", name)
		return
	case errors.Is(err, consumer.ErrDeposed):
		cs.errs.Error("canonlog: consumer stopped: another instance took it over, or it was reset; this process runs it no more until it restarts",
			"consumer", name, "error", err)
	default:
		var he *consumer.HandlerError
		if errors.As(err, &he) {
			cs.errs.Error("canonlog: consumer stopped: its handler keeps failing on an event; fix the handler or park the event, then restart (canonlog consumers status)",
				"consumer", name, "seq", he.Seq, "attempts", he.Attempts, "error", he.Err)
		} else {
			cs.errs.Error("canonlog: consumer stopped on an error; this process runs it no more until it restarts", "consumer", name, "error", err)
		}
	}
	if cs.cfg.ShutdownOnConsumerError {
		cs.errs.Error("canonlog: shutting the app down (Config.ShutdownOnConsumerError)", "consumer", name)
		if err := cs.shut.Shutdown(fx.ExitCode(1)); err != nil {
			cs.errs.Error("canonlog: shut the app down", "error", err)
		}
	}
}

// stop cancels every consumer's Run and waits for them to return. The
// handler in flight finishes, unless ctx ends first: an external
// handler's context is then cancelled too; a transactional handler's
// transaction is rolled back as soon as Run's context ends, and its page
// is handled again by the next run.
func (cs *consumers) stop(ctx context.Context) error {
	for _, r := range cs.running {
		r.cancel()
	}
	var late []string
	for _, r := range cs.running {
		select {
		case <-r.done:
			continue
		case <-ctx.Done():
		}
		r.abort()
		select {
		case <-r.done:
		case <-time.After(consumerAbortGrace):
			late = append(late, r.c.Name())
		}
	}
	for _, r := range cs.running {
		r.abort()
	}
	cs.running = nil
	if len(late) > 0 {
		return fmt.Errorf("app: stop: consumers still running after the stop context ended and their handlers' contexts were cancelled: %s", strings.Join(late, ", "))
	}
	return nil
}

// kindsList renders a consumer's kinds for a log line.
func kindsList(kinds []eventlog.Kind) string {
	if len(kinds) == 0 {
		return "*"
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = string(k)
	}
	return strings.Join(parts, ",")
}
