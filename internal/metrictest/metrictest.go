// Package metrictest reads what an OpenTelemetry SDK manual reader
// collected, for the tests of canonlog's instrumentation.
package metrictest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Collect reads every metric of reader, by name.
func Collect(t testing.TB, reader *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// Sum returns the value of counter m's point with exactly attrs; 0 when
// it has none.
func Sum(m metricdata.Metrics, attrs ...attribute.KeyValue) int64 {
	want := attribute.NewSet(attrs...)
	data, _ := m.Data.(metricdata.Sum[int64])
	for _, dp := range data.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	return 0
}

// Count returns the number of recordings of histogram m (of float64 or
// int64) with exactly attrs; 0 when it has none.
func Count(m metricdata.Metrics, attrs ...attribute.KeyValue) uint64 {
	want := attribute.NewSet(attrs...)
	switch data := m.Data.(type) {
	case metricdata.Histogram[float64]:
		for _, dp := range data.DataPoints {
			if dp.Attributes.Equals(&want) {
				return dp.Count
			}
		}
	case metricdata.Histogram[int64]:
		for _, dp := range data.DataPoints {
			if dp.Attributes.Equals(&want) {
				return dp.Count
			}
		}
	}
	return 0
}

// Gauge returns the value of gauge m (of int64 or float64) with exactly
// attrs, and whether it has one.
func Gauge(m metricdata.Metrics, attrs ...attribute.KeyValue) (float64, bool) {
	want := attribute.NewSet(attrs...)
	switch data := m.Data.(type) {
	case metricdata.Gauge[int64]:
		for _, dp := range data.DataPoints {
			if dp.Attributes.Equals(&want) {
				return float64(dp.Value), true
			}
		}
	case metricdata.Gauge[float64]:
		for _, dp := range data.DataPoints {
			if dp.Attributes.Equals(&want) {
				return dp.Value, true
			}
		}
	}
	return 0, false
}
