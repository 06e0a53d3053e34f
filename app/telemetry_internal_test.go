package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/canonlog/canonlog/eventlogtest"
)

// TestLogConfig: the providers Module finds in the graph go into the
// log's configuration beside the rest of it, whatever the log records.
// TestModuleTelemetry reads what it records.
func TestLogConfig(t *testing.T) {
	t.Parallel()
	db := eventlogtest.NewDB(t)
	clock := eventlogtest.NewFakeClock(time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC))

	t.Run("passes_the_providers", func(t *testing.T) {
		t.Parallel()
		mp, tp := metricnoop.NewMeterProvider(), tracenoop.NewTracerProvider()
		cfg := logConfig(Params{
			Config:         Config{Clock: clock, MaxPayloadBytes: 512, SerializeAppends: true},
			MeterProvider:  mp,
			TracerProvider: tp,
		}, db, false)
		require.Equal(t, mp, cfg.MeterProvider)
		require.Equal(t, tp, cfg.TracerProvider)
		require.Equal(t, clock, cfg.Clock)
		require.Equal(t, 512, cfg.MaxPayloadBytes)
		require.True(t, cfg.SerializeAppends)
		require.False(t, cfg.Notify, "SQLite has no wake-ups")
	})

	t.Run("none_is_nil", func(t *testing.T) {
		t.Parallel()
		cfg := logConfig(Params{}, db, false)
		require.Nil(t, cfg.MeterProvider, "nil: the log records nothing")
		require.Nil(t, cfg.TracerProvider)
	})
}
