package consumer

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/canonlog/canonlog/eventlog"
)

// InstrumentationName names the consumer package's meter and tracer.
const InstrumentationName = "github.com/canonlog/canonlog/consumer"

// Attribute keys: a consumer's name is bounded by the service's code.
var (
	attrName    = attribute.Key("canonlog.consumer.name")
	attrOutcome = attribute.Key("canonlog.consumer.outcome")
	attrResult  = attribute.Key("canonlog.event.result")
)

// telemetry records a consumer's metrics and traces its handler calls,
// through its log's providers (eventlog.Log.MeterProvider,
// TracerProvider). A nil *telemetry records nothing.
type telemetry struct {
	meter   metric.Meter // nil: no metrics
	tracer  trace.Tracer // nil: no spans
	name    attribute.KeyValue
	handle  metric.Float64Histogram
	events  metric.Int64Counter
	retries metric.Int64Counter
	// Observed while Run runs (observe).
	position, lag metric.Int64ObservableGauge
	lagAge        metric.Float64ObservableGauge
}

func newTelemetry(log *eventlog.Log, name string) (*telemetry, error) {
	mp, tp := log.MeterProvider(), log.TracerProvider()
	if mp == nil && tp == nil {
		return nil, nil
	}
	t := &telemetry{name: attrName.String(name)}
	if tp != nil {
		t.tracer = tp.Tracer(InstrumentationName)
	}
	if mp == nil {
		return t, nil
	}
	t.meter = mp.Meter(InstrumentationName)
	var err error
	if t.handle, err = t.meter.Float64Histogram("canonlog.consumer.handle.duration",
		metric.WithUnit("s"),
		metric.WithDescription("One call of a consumer's handler (an event for Handle, a page for HandleBatch and HandleTx), by consumer and outcome."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)); err != nil {
		return nil, err
	}
	if t.events, err = t.meter.Int64Counter("canonlog.consumer.events",
		metric.WithUnit("{event}"),
		metric.WithDescription("Events a consumer is done with, by result: handled, or parked after its attempts (FailPark).")); err != nil {
		return nil, err
	}
	if t.retries, err = t.meter.Int64Counter("canonlog.consumer.retries",
		metric.WithUnit("{attempt}"),
		metric.WithDescription("Failed handler attempts that the consumer tries again after a backoff.")); err != nil {
		return nil, err
	}
	if t.position, err = t.meter.Int64ObservableGauge("canonlog.consumer.position",
		metric.WithUnit("{seq}"),
		metric.WithDescription("The last seq a running consumer handled.")); err != nil {
		return nil, err
	}
	if t.lag, err = t.meter.Int64ObservableGauge("canonlog.consumer.lag",
		metric.WithUnit("{seq}"),
		metric.WithDescription("The log's head seq minus the last seq a running consumer handled.")); err != nil {
		return nil, err
	}
	if t.lagAge, err = t.meter.Float64ObservableGauge("canonlog.consumer.lag.age",
		metric.WithUnit("s"),
		metric.WithDescription("How long ago the oldest event of its kinds that a running consumer has not handled was stamped (its ts); 0 when caught up.")); err != nil {
		return nil, err
	}
	return t, nil
}

// observe reports c's position and lag while it runs, until the returned
// function is called.
func (t *telemetry) observe(c *Consumer) (stop func(), err error) {
	if t == nil || t.meter == nil {
		return func() {}, nil
	}
	reg, err := t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		handled := c.handledSeq.Load()
		head, err := c.log.LastSeq(ctx)
		if err != nil {
			return err
		}
		age, err := c.log.LagAge(ctx, eventlog.Filter{Kinds: c.cfg.Kinds, AfterSeq: handled})
		if err != nil {
			return err
		}
		attrs := metric.WithAttributes(t.name)
		o.ObserveInt64(t.position, handled, attrs)
		o.ObserveInt64(t.lag, max(0, head-handled), attrs)
		o.ObserveFloat64(t.lagAge, age.Seconds(), attrs)
		return nil
	}, t.position, t.lag, t.lagAge)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}

// handling starts a span for one handler call of n events and returns
// the context to call the handler with and the function that records its
// end.
func (t *telemetry) handling(ctx context.Context, n int) (context.Context, func(err error)) {
	if t == nil {
		return ctx, func(error) {}
	}
	start := time.Now()
	var span trace.Span
	if t.tracer != nil {
		ctx, span = t.tracer.Start(ctx, "canonlog.consumer.handle", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(t.name, attribute.Int("canonlog.consumer.events", n)))
	}
	return ctx, func(err error) {
		outcome := "ok"
		if err != nil {
			outcome = "error"
		}
		if span != nil {
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}
		if t.meter != nil {
			t.handle.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(t.name, attrOutcome.String(outcome)))
		}
	}
}

// done counts n events the consumer is done with, as result (handled or
// parked).
func (t *telemetry) done(ctx context.Context, n int, result string) {
	if t == nil || t.meter == nil || n == 0 {
		return
	}
	t.events.Add(ctx, int64(n), metric.WithAttributes(t.name, attrResult.String(result)))
}

// retried counts a failed attempt that will be tried again.
func (t *telemetry) retried(ctx context.Context) {
	if t == nil || t.meter == nil {
		return
	}
	t.retries.Add(ctx, 1, metric.WithAttributes(t.name))
}
