package projection

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// InstrumentationName names the projection package's meter.
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
