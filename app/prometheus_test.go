package app_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
)

// scrape answers GET /metrics through h and returns the body, checking
// that it is the Prometheus text format, parses, and passes promlint.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.True(t, strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4"), rec.Header().Get("Content-Type"))
	body := rec.Body.String()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	_, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)
	return body
}

func TestPrometheusModule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	setup := func(t *testing.T) (*fxtest.App, *eventlog.Log, metric.MeterProvider, app.MetricsHandler, *prometheus.Registry) {
		var (
			log     *eventlog.Log
			mp      metric.MeterProvider
			handler app.MetricsHandler
			reg     *prometheus.Registry
		)
		a := fxtest.New(t,
			fx.Supply(app.Config{DatabaseURL: "sqlite:" + filepath.Join(t.TempDir(), "test.db")}),
			app.PrometheusModule,
			app.Module,
			fx.Populate(&log, &mp, &handler, &reg),
		)
		a.RequireStart()
		return a, log, mp, handler, reg
	}

	t.Run("validates", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, fx.ValidateApp(fx.Supply(app.Config{}), app.PrometheusModule, app.Module))
	})

	t.Run("serves_what_the_provider_records_in_the_text_format", func(t *testing.T) {
		t.Parallel()
		a, log, mp, handler, _ := setup(t)
		defer a.RequireStop()
		for i := range 3 {
			_, err := log.Append(ctx, probeResult("web-1", "r-1", "CIS-5.2.1", "web-1/"+string(rune('a'+i))))
			require.NoError(t, err)
		}
		requests, err := mp.Meter("canonlog.app.test").Int64Counter("canonlog.test.requests", metric.WithDescription("Requests the test made."))
		require.NoError(t, err)
		requests.Add(ctx, 3)

		body := scrape(t, handler)
		require.Contains(t, body, "# TYPE canonlog_test_requests_total counter")
		require.Regexp(t, `(?m)^canonlog_test_requests_total\{[^}]*otel_scope_name="canonlog.app.test"[^}]*\} 3$`, body)
		require.Contains(t, body, "go_goroutines ", "the Go runtime collector")
		require.Contains(t, body, "target_info{", "the resource")
	})

	t.Run("its_registry_takes_the_services_collectors", func(t *testing.T) {
		t.Parallel()
		a, _, _, handler, reg := setup(t)
		defer a.RequireStop()
		jobs := prometheus.NewCounter(prometheus.CounterOpts{Name: "fleet_jobs_total", Help: "Jobs run."})
		reg.MustRegister(jobs)
		jobs.Add(2)
		require.Contains(t, scrape(t, handler), "fleet_jobs_total 2")
	})

	t.Run("shuts_the_provider_down_on_stop", func(t *testing.T) {
		t.Parallel()
		a, _, mp, handler, _ := setup(t)
		requests, err := mp.Meter("canonlog.app.test").Int64Counter("canonlog.test.requests", metric.WithDescription("Requests the test made."))
		require.NoError(t, err)
		requests.Add(ctx, 1)
		require.Contains(t, scrape(t, handler), "canonlog_test_requests_total")
		a.RequireStop()
		require.NotContains(t, scrape(t, handler), "canonlog_test_requests_total", "a stopped provider exports nothing")
	})
}
