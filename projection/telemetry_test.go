package projection_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/metrictest"
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

		// canonlog.projection.stale: 0 for the view as built, 1 for a
		// binary that registers a new version of it.
		staleOf := func(reader *sdkmetric.ManualReader) int64 {
			points := metrictest.Collect(t, reader)["canonlog.projection.stale"].Data.(metricdata.Gauge[int64]).DataPoints
			require.Len(t, points, 1)
			require.True(t, points[0].Attributes.Equals(&want))
			return points[0].Value
		}
		require.Equal(t, int64(0), staleOf(reader))
		reader2 := sdkmetric.NewManualReader()
		reg2, err := projection.NewRegistry(&kindView{testView{version: 2, kinds: []eventlog.Kind{"deploy_step"}}})
		require.NoError(t, err)
		m2, err := projection.NewManager(m.DB(), reg2, &projection.ManagerConfig{
			Log: &eventlog.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader2))}})
		require.NoError(t, err)
		require.Equal(t, int64(1), staleOf(reader2))
		require.NoError(t, m2.Close())
		rm = metricdata.ResourceMetrics{}
		require.NoError(t, reader2.Collect(ctx, &rm))
		for _, sm := range rm.ScopeMetrics {
			for _, mt := range sm.Metrics {
				if mt.Name == "canonlog.projection.stale" {
					require.Empty(t, mt.Data.(metricdata.Gauge[int64]).DataPoints, "a closed Manager reports nothing")
				}
			}
		}
	})
}

// With providers, rebuilds report their progress while they run and
// record their duration and lock time; verifies count their outcomes;
// both are spans.
func TestRebuildAndVerifyTelemetry(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		reader := sdkmetric.NewManualReader()
		spans := tracetest.NewSpanRecorder()
		db := dbtest.New(t, backend).Open(t)
		reg, err := projection.NewRegistry(&kindView{testView{kinds: []eventlog.Kind{"deploy_step"}}})
		require.NoError(t, err)
		m, err := projection.NewManager(db, reg, &projection.ManagerConfig{Log: &eventlog.Config{
			MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
			TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close() })
		_, err = m.Migrate(ctx)
		require.NoError(t, err)
		for range 5 {
			_, err := m.Log().Append(ctx, eventlog.Entry{Kind: "deploy_step", HostID: "h", Payload: json.RawMessage(`{}`)})
			require.NoError(t, err)
		}

		name := attribute.String("canonlog.projection.name", "test_view")
		var phases []string
		res, err := m.Rebuild(ctx, &projection.RebuildOptions{Progress: func(p projection.Progress) {
			got := metrictest.Collect(t, reader)
			running := got["canonlog.rebuild.running"].Data.(metricdata.Gauge[int64]).DataPoints
			require.Len(t, running, 1)
			phase, _ := running[0].Attributes.Value("canonlog.rebuild.phase")
			require.Equal(t, string(p.Phase), phase.AsString())
			done := got["canonlog.rebuild.events.done"].Data.(metricdata.Gauge[int64]).DataPoints
			require.Equal(t, p.Done, done[0].Value)
			phases = append(phases, phase.AsString())
		}})
		require.NoError(t, err)
		require.NotEmpty(t, phases)
		mode := "offline"
		if res[0].Online {
			mode = "online"
		}
		got := metrictest.Collect(t, reader)
		if r, ok := got["canonlog.rebuild.running"]; ok {
			require.Empty(t, r.Data.(metricdata.Gauge[int64]).DataPoints, "no rebuild runs any more")
		}
		require.Equal(t, uint64(1), metrictest.Count(got["canonlog.rebuild.duration"], name,
			attribute.String("canonlog.rebuild.mode", mode), attribute.String("canonlog.rebuild.outcome", "ok")))
		require.Equal(t, uint64(1), metrictest.Count(got["canonlog.rebuild.lock.duration"], name, attribute.String("canonlog.rebuild.mode", mode)))

		vr, err := m.Verify(ctx, nil)
		require.NoError(t, err)
		require.True(t, vr[0].Equal)
		_, err = db.Exec(`DELETE FROM test_view WHERE event_log_seq = (SELECT MIN(event_log_seq) FROM test_view)`)
		require.NoError(t, err)
		vr, err = m.Verify(ctx, nil)
		require.NoError(t, err)
		require.False(t, vr[0].Equal)
		runs := metrictest.Collect(t, reader)["canonlog.verify.runs"]
		for _, outcome := range []string{"equal", "different"} {
			want := attribute.NewSet(name, attribute.String("canonlog.verify.outcome", outcome))
			var n int64
			for _, dp := range runs.Data.(metricdata.Sum[int64]).DataPoints {
				if dp.Attributes.Equals(&want) {
					n = dp.Value
				}
			}
			require.Equal(t, int64(1), n, outcome)
		}
		names := map[string]int{}
		for _, s := range spans.Ended() {
			names[s.Name()]++
		}
		require.Equal(t, 1, names["canonlog.rebuild"])
		require.Equal(t, 2, names["canonlog.verify"])
	})
}
