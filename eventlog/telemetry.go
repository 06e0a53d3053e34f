package eventlog

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/lib/pq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"modernc.org/sqlite"

	"github.com/canonlog/canonlog/internal/pgstat"
)

// InstrumentationName names the log's meter and tracer.
const InstrumentationName = "github.com/canonlog/canonlog/eventlog"

// Append operations, the canonlog.append.operation attribute.
const (
	opSingle = "single" // Append
	opBatch  = "batch"  // AppendBatch
	opTx     = "tx"     // AppendTx
)

// Append outcomes, the canonlog.append.outcome attribute.
const (
	outOK        = "ok"        // stored at least one new event
	outDuplicate = "duplicate" // every entry's event id was already stored
	outConflict  = "conflict"  // an event id reused with other content, or a failed condition
	outInvalid   = "invalid"   // a malformed entry or condition: nothing reached the database
	outError     = "error"     // anything else: the database, the hook, the context
)

// Attribute keys of the log's metrics and spans.
var (
	attrOperation = attribute.Key("canonlog.append.operation")
	attrOutcome   = attribute.Key("canonlog.append.outcome")
	attrResult    = attribute.Key("canonlog.event.result")
)

// telemetry records the log's metrics and traces its appends. A nil
// *telemetry (no providers configured) records nothing.
type telemetry struct {
	tracer    trace.Tracer // nil: no spans
	duration  metric.Float64Histogram
	events    metric.Int64Counter
	batchSize metric.Int64Histogram
	metrics   bool
	system    string // db.system.name

	namespaceOnce sync.Once
	namespace     string // db.namespace, read once
}

// providers returns cfg's providers, nil for none and for the API's
// no-op ones, which record nothing: the log and its consumers then skip
// the work of recording.
func providers(cfg *Config) (metric.MeterProvider, trace.TracerProvider) {
	mp, tp := cfg.MeterProvider, cfg.TracerProvider
	if _, ok := mp.(metricnoop.MeterProvider); ok {
		mp = nil
	}
	if _, ok := tp.(tracenoop.TracerProvider); ok {
		tp = nil
	}
	return mp, tp
}

// newTelemetry builds the log's instruments from its providers; nil when
// it has neither.
func newTelemetry(l *Log) (*telemetry, error) {
	if l.meters == nil && l.tracers == nil {
		return nil, nil
	}
	t := &telemetry{system: "sqlite"}
	if l.backend == Postgres {
		t.system = "postgresql"
	}
	if l.tracers != nil {
		t.tracer = l.tracers.Tracer(InstrumentationName)
	}
	if l.meters == nil {
		return t, nil
	}
	t.metrics = true
	m := l.meters.Meter(InstrumentationName)
	var err error
	if t.duration, err = m.Float64Histogram("canonlog.append.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of an append call (Append, AppendBatch, AppendTx), by operation and outcome."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	if t.events, err = m.Int64Counter("canonlog.append.events",
		metric.WithUnit("{event}"),
		metric.WithDescription("Entries of successful appends, by result: stored (new events) or duplicate (event id already stored).")); err != nil {
		return nil, err
	}
	if t.batchSize, err = m.Int64Histogram("canonlog.append.batch.size",
		metric.WithUnit("{entry}"),
		metric.WithDescription("Entries per append call, by operation."),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)); err != nil {
		return nil, err
	}
	head, err := m.Int64ObservableGauge("canonlog.log.head",
		metric.WithUnit("{seq}"),
		metric.WithDescription("The highest seq in the log, read when the metrics are collected."))
	if err != nil {
		return nil, err
	}
	if _, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		seq, err := l.LastSeq(ctx)
		if err != nil {
			return err
		}
		o.ObserveInt64(head, seq)
		return nil
	}, head); err != nil {
		return nil, err
	}
	if l.backend != Postgres {
		return t, nil
	}
	horizon, err := m.Float64ObservableGauge("canonlog.log.horizon.age",
		metric.WithUnit("s"),
		metric.WithDescription("How long the oldest transaction still in progress on the server, which holds followers back (their horizon), has run; 0 when none does."))
	if err != nil {
		return nil, err
	}
	if _, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		age, _, err := pgstat.HorizonAge(ctx, l.db)
		if err != nil {
			return err
		}
		o.ObserveFloat64(horizon, age.Seconds())
		return nil
	}, horizon); err != nil {
		return nil, err
	}
	return t, nil
}

// observed runs an append call of n entries as operation op, recording
// its metrics and span when the log has telemetry.
func (l *Log) observed(ctx context.Context, op string, n int, do func(ctx context.Context) ([]Result, error)) ([]Result, error) {
	t := l.tel
	if t == nil {
		return do(ctx)
	}
	start := time.Now()
	var span trace.Span
	if t.tracer != nil {
		ctx, span = t.tracer.Start(ctx, "INSERT event_log", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(t.spanAttributes(ctx, l, op, n)...))
	}
	res, err := do(ctx)
	outcome := appendOutcome(res, err)
	if span != nil {
		if err != nil {
			if code := sqlState(err); code != "" {
				span.SetAttributes(attribute.String("db.response.status_code", code))
			}
			span.SetAttributes(attribute.String("error.type", outcome))
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	if t.metrics {
		opAttr := attrOperation.String(op)
		t.duration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(opAttr, attrOutcome.String(outcome)))
		t.batchSize.Record(ctx, int64(n), metric.WithAttributes(opAttr))
		if err == nil {
			var dups int64
			for _, r := range res {
				if r.Duplicate {
					dups++
				}
			}
			if stored := int64(len(res)) - dups; stored > 0 {
				t.events.Add(ctx, stored, metric.WithAttributes(opAttr, attrResult.String("stored")))
			}
			if dups > 0 {
				t.events.Add(ctx, dups, metric.WithAttributes(opAttr, attrResult.String("duplicate")))
			}
		}
	}
	return res, err
}

// spanAttributes returns the attributes of an append's span: the stable
// OpenTelemetry database attributes and canonlog's own.
func (t *telemetry) spanAttributes(ctx context.Context, l *Log, op string, n int) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("db.system.name", t.system),
		attribute.String("db.operation.name", "INSERT"),
		attribute.String("db.collection.name", "event_log"),
		attribute.String("db.query.summary", "INSERT event_log"),
		attrOperation.String(op),
	}
	if n > 1 {
		attrs = append(attrs, attribute.Int("db.operation.batch.size", n))
	}
	if ns := t.namespaceOf(ctx, l); ns != "" {
		attrs = append(attrs, attribute.String("db.namespace", ns))
	}
	return attrs
}

// namespaceOf returns db.namespace: on PostgreSQL the database and the
// schema the log writes to ("app.public"), read from the server once,
// at the first traced append; on SQLite "main".
func (t *telemetry) namespaceOf(ctx context.Context, l *Log) string {
	t.namespaceOnce.Do(func() {
		if l.backend != Postgres {
			t.namespace = "main"
			return
		}
		// Best effort: a span without it is still a span.
		_ = l.db.QueryRowxContext(ctx, `SELECT current_database() || '.' || current_schema()`).Scan(&t.namespace)
	})
	return t.namespace
}

// appendOutcome classifies an append call's result.
func appendOutcome(res []Result, err error) string {
	var entryErr *EntryError
	switch {
	case err == nil:
		for _, r := range res {
			if !r.Duplicate {
				return outOK
			}
		}
		if len(res) == 0 {
			return outOK
		}
		return outDuplicate
	case errors.Is(err, ErrEventIDConflict), errors.Is(err, ErrConditionFailed):
		return outConflict
	case errors.As(err, &entryErr), errors.Is(err, ErrInvalidCondition):
		return outInvalid
	}
	return outError
}

// sqlState returns the SQLSTATE of a PostgreSQL error, or SQLite's
// result code, in err; "" for none.
func sqlState(err error) string {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return string(pqErr.Code)
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		return strconv.Itoa(sqliteErr.Code())
	}
	return ""
}

// observe reports a named follower's position and lag while Events runs,
// until the returned function is called: canonlog.follower.position (the
// last seq yielded), .lag (the head minus it) and .lag.age (seconds since
// the first matching event after it was stamped; 0 when caught up). A
// follower without a name, or of a log without a MeterProvider, reports
// nothing.
func (f *Follower) observe() (stop func(), err error) {
	if f.name == "" || f.log.meters == nil {
		return func() {}, nil
	}
	m := f.log.meters.Meter(InstrumentationName)
	position, err := m.Int64ObservableGauge("canonlog.follower.position",
		metric.WithUnit("{seq}"), metric.WithDescription("The last seq a named follower yielded."))
	if err != nil {
		return nil, err
	}
	lag, err := m.Int64ObservableGauge("canonlog.follower.lag",
		metric.WithUnit("{seq}"), metric.WithDescription("The log's head seq minus the last seq a named follower yielded."))
	if err != nil {
		return nil, err
	}
	lagAge, err := m.Float64ObservableGauge("canonlog.follower.lag.age",
		metric.WithUnit("s"), metric.WithDescription("How long ago the first matching event a named follower has not yielded was stamped (its ts); 0 when caught up."))
	if err != nil {
		return nil, err
	}
	name := metric.WithAttributes(attribute.String("canonlog.follower.name", f.name))
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		seq := f.delivered.Load()
		head, err := f.log.LastSeq(ctx)
		if err != nil {
			return err
		}
		next := f.filter
		next.AfterSeq = seq
		age, err := f.log.LagAge(ctx, next)
		if err != nil {
			return err
		}
		o.ObserveInt64(position, seq, name)
		o.ObserveInt64(lag, max(0, head-seq), name)
		o.ObserveFloat64(lagAge, age.Seconds(), name)
		return nil
	}, position, lag, lagAge)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}
