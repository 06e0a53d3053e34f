package projection_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// With a MeterProvider, a Manager records each projection's apply time
// inside appends, once per append that the projection consumes.
func TestApplyDuration(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		reader := sdkmetric.NewManualReader()
		reg, err := projection.NewRegistry(&kindView{testView{kinds: []eventlog.Kind{"deploy_step"}}})
		require.NoError(t, err)
		m, err := projection.NewManager(dbtest.New(t, backend).Open(t), reg, &projection.ManagerConfig{
			Log: &eventlog.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close() })
		_, err = m.Migrate(ctx)
		require.NoError(t, err)

		e := func(kind eventlog.Kind) eventlog.Entry {
			return eventlog.Entry{Kind: kind, HostID: "h", Payload: json.RawMessage(`{}`)}
		}
		for range 3 {
			_, err := m.Log().Append(ctx, e("deploy_step"))
			require.NoError(t, err)
		}
		_, err = m.Log().Append(ctx, e(eventlog.KindEffect)) // not the view's kind
		require.NoError(t, err)
		_, err = m.Log().AppendBatch(ctx, []eventlog.Entry{e("deploy_step"), e("deploy_step"), e(eventlog.KindEffect)})
		require.NoError(t, err)

		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(ctx, &rm))
		var got *metricdata.Histogram[float64]
		for _, sm := range rm.ScopeMetrics {
			for _, mt := range sm.Metrics {
				if mt.Name == "canonlog.projection.apply.duration" {
					h := mt.Data.(metricdata.Histogram[float64])
					got = &h
					require.Equal(t, "s", mt.Unit)
				}
			}
		}
		require.NotNil(t, got)
		require.Len(t, got.DataPoints, 1)
		want := attribute.NewSet(attribute.String("canonlog.projection.name", "test_view"))
		require.True(t, got.DataPoints[0].Attributes.Equals(&want))
		require.Equal(t, uint64(4), got.DataPoints[0].Count, "three single appends and one batch applied it")
	})
}
