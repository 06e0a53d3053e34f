package projection

import (
	"context"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/canonlog/canonlog/eventlog"
)

// InstrumentationName names the projection package's meter and tracer.
const InstrumentationName = "github.com/canonlog/canonlog/projection"

// attrProjection names a projection in the metrics: bounded by the
// registry.
var attrProjection = attribute.Key("canonlog.projection.name")

// applyHistogram returns the histogram of projection apply times inside
// appends.
func applyHistogram(mp metric.MeterProvider) (metric.Float64Histogram, error) {
	return mp.Meter(InstrumentationName).Float64Histogram("canonlog.projection.apply.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time one projection took to apply one append's events, inside the append's transaction, by projection."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
}

// opTelemetry records rebuilds and verifies through their log's providers
// (eventlog.Log.MeterProvider, TracerProvider). A nil *opTelemetry
// records nothing.
type opTelemetry struct {
	meter  metric.Meter // nil: no metrics
	tracer trace.Tracer // nil: no spans

	rebuildDuration metric.Float64Histogram
	lockHeld        metric.Float64Histogram
	verifies        metric.Int64Counter

	// The rebuild in progress, for the gauges.
	mu    sync.Mutex
	state *Progress
}

func newOpTelemetry(log *eventlog.Log) (*opTelemetry, error) {
	mp, tp := log.MeterProvider(), log.TracerProvider()
	if mp == nil && tp == nil {
		return nil, nil
	}
	t := &opTelemetry{}
	if tp != nil {
		t.tracer = tp.Tracer(InstrumentationName)
	}
	if mp == nil {
		return t, nil
	}
	t.meter = mp.Meter(InstrumentationName)
	var err error
	if t.rebuildDuration, err = t.meter.Float64Histogram("canonlog.rebuild.duration",
		metric.WithUnit("s"),
		metric.WithDescription("One projection's rebuild, by projection, mode (online, offline) and outcome (ok, error)."),
		metric.WithExplicitBucketBoundaries(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)); err != nil {
		return nil, err
	}
	if t.lockHeld, err = t.meter.Float64Histogram("canonlog.rebuild.lock.duration",
		metric.WithUnit("s"),
		metric.WithDescription("How long a rebuild held its projection's exclusive lock (appends of its kinds waited at most that long): the swap online, the whole rebuild offline."),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300)); err != nil {
		return nil, err
	}
	if t.verifies, err = t.meter.Int64Counter("canonlog.verify.runs",
		metric.WithUnit("{run}"),
		metric.WithDescription("Verifications of a projection, by projection and outcome (equal, different, error).")); err != nil {
		return nil, err
	}
	return t, nil
}

// observeRebuilds reports the rebuild in progress until the returned
// function is called: canonlog.rebuild.running (1, with the phase) and
// the events done and to do.
func (t *opTelemetry) observeRebuilds() (stop func(), err error) {
	if t == nil || t.meter == nil {
		return func() {}, nil
	}
	running, err := t.meter.Int64ObservableGauge("canonlog.rebuild.running",
		metric.WithUnit("{rebuild}"),
		metric.WithDescription("1 while a rebuild of the projection runs in this process, with its phase."))
	if err != nil {
		return nil, err
	}
	done, err := t.meter.Int64ObservableGauge("canonlog.rebuild.events.done",
		metric.WithUnit("{event}"),
		metric.WithDescription("Events the running rebuild has replayed."))
	if err != nil {
		return nil, err
	}
	total, err := t.meter.Int64ObservableGauge("canonlog.rebuild.events.total",
		metric.WithUnit("{event}"),
		metric.WithDescription("Events the running rebuild reads, counted when it started."))
	if err != nil {
		return nil, err
	}
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t.mu.Lock()
		p := t.state
		t.mu.Unlock()
		if p == nil {
			return nil
		}
		name := metric.WithAttributes(attrProjection.String(p.Projection))
		o.ObserveInt64(running, 1, metric.WithAttributes(attrProjection.String(p.Projection), attribute.String("canonlog.rebuild.phase", string(p.Phase))))
		o.ObserveInt64(done, p.Done, name)
		o.ObserveInt64(total, p.Total, name)
		return nil
	}, running, done, total)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}

// progress returns the Progress callback of a rebuild: it keeps the
// state the gauges report, then calls the caller's.
func (t *opTelemetry) progress(next func(Progress)) func(Progress) {
	if t == nil || t.meter == nil {
		return next
	}
	return func(p Progress) {
		t.mu.Lock()
		t.state = &p
		t.mu.Unlock()
		if next != nil {
			next(p)
		}
	}
}

// rebuilding starts the span of one projection's rebuild and returns the
// context to rebuild in and the function that records its end.
func (t *opTelemetry) rebuilding(ctx context.Context, name string) (context.Context, func(RebuildResult, error)) {
	if t == nil {
		return ctx, func(RebuildResult, error) {}
	}
	start := time.Now()
	var span trace.Span
	if t.tracer != nil {
		ctx, span = t.tracer.Start(ctx, "canonlog.rebuild", trace.WithAttributes(attrProjection.String(name)))
	}
	return ctx, func(res RebuildResult, err error) {
		mode, outcome := "offline", "ok"
		if res.Online {
			mode = "online"
		}
		if err != nil {
			outcome = "error"
		}
		if span != nil {
			span.SetAttributes(attribute.String("canonlog.rebuild.mode", mode), attribute.Int64("canonlog.rebuild.events", res.Events))
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
		if t.meter == nil {
			return
		}
		t.mu.Lock()
		t.state = nil
		t.mu.Unlock()
		attrs := metric.WithAttributes(attrProjection.String(name), attribute.String("canonlog.rebuild.mode", mode), attribute.String("canonlog.rebuild.outcome", outcome))
		t.rebuildDuration.Record(ctx, time.Since(start).Seconds(), attrs)
		if err == nil {
			t.lockHeld.Record(ctx, res.LockHeld.Seconds(), metric.WithAttributes(attrProjection.String(name), attribute.String("canonlog.rebuild.mode", mode)))
		}
	}
}

// verifying starts the span of one projection's verify and returns the
// context to verify in and the function that records its end.
func (t *opTelemetry) verifying(ctx context.Context, name string) (context.Context, func(VerifyResult, error)) {
	if t == nil {
		return ctx, func(VerifyResult, error) {}
	}
	var span trace.Span
	if t.tracer != nil {
		ctx, span = t.tracer.Start(ctx, "canonlog.verify", trace.WithAttributes(attrProjection.String(name)))
	}
	return ctx, func(res VerifyResult, err error) {
		outcome := "equal"
		switch {
		case err != nil:
			outcome = "error"
		case !res.Equal:
			outcome = "different"
		}
		if span != nil {
			span.SetAttributes(attribute.String("canonlog.verify.outcome", outcome))
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
		if t.meter != nil {
			t.verifies.Add(ctx, 1, metric.WithAttributes(attrProjection.String(name), attribute.String("canonlog.verify.outcome", outcome)))
		}
	}
}

// observeStale reports, at each collection, whether each projection reg
// registers is stale (1) or not (0): canonlog.projection.stale, one read
// of the checkpoints.
func observeStale(mp metric.MeterProvider, db *sqlx.DB, reg *Registry) (metric.Registration, error) {
	m := mp.Meter(InstrumentationName)
	stale, err := m.Int64ObservableGauge("canonlog.projection.stale",
		metric.WithUnit("{projection}"),
		metric.WithDescription("1 when a registered projection is stale (built by another version, never built, or skipped by an append) and needs a rebuild; 0 when it is current."))
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		cps, err := readCheckpoints(ctx, db)
		if err != nil {
			return err
		}
		for _, st := range statusOf(cps, reg) {
			if !st.Registered {
				continue
			}
			v := int64(0)
			if st.Stale {
				v = 1
			}
			o.ObserveInt64(stale, v, metric.WithAttributes(attrProjection.String(st.Name)))
		}
		return nil
	}, stale)
}
