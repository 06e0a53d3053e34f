package app

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/fx"
)

// PrometheusModule sets up the OpenTelemetry metrics SDK with a
// Prometheus exporter, so that Module (which takes the metric.MeterProvider
// it provides) and anything else in the graph record metrics a Prometheus
// server can scrape. It provides:
//
//   - metric.MeterProvider: an SDK provider whose only reader is the
//     Prometheus exporter; shut down on stop, after everything that
//     depends on it has stopped;
//   - *prometheus.Registry: the registry the exporter writes to, its own
//     (never prometheus.DefaultRegisterer), which also holds the Go
//     runtime and process collectors; register the service's own
//     client_golang collectors here;
//   - MetricsHandler: serves that registry in the Prometheus text format;
//     mount it at GET /metrics.
//
// An optional *resource.Resource in the graph describes the service in
// the target_info metric; it defaults to resource.Default() (service.name
// from OTEL_SERVICE_NAME, else unknown_service:<binary>).
//
//	fx.New(
//		fx.Supply(app.Config{}),
//		app.PrometheusModule,
//		app.Module, // records through PrometheusModule's provider
//		fx.Invoke(func(mux *http.ServeMux, h app.MetricsHandler) { mux.Handle("GET /metrics", h) }),
//	)
//
// A service that sets up the SDK itself (another exporter, views)
// provides its own metric.MeterProvider instead: fx refuses a type
// provided twice. See docs/fx.md, "Metrics and traces".
var PrometheusModule = fx.Module("canonlog.prometheus",
	fx.Provide(NewPrometheus),
)

// MetricsHandler serves PrometheusModule's registry in the Prometheus text
// format. It is a type of its own so that it never collides with the
// service's http.Handler in the graph.
type MetricsHandler http.Handler

// PrometheusParams are PrometheusModule's dependencies.
type PrometheusParams struct {
	fx.In

	Lifecycle fx.Lifecycle
	// Resource describes the service (target_info). Optional: defaults
	// to resource.Default().
	Resource *resource.Resource `optional:"true"`
}

// PrometheusResult is what PrometheusModule provides.
type PrometheusResult struct {
	fx.Out

	MeterProvider metric.MeterProvider
	Registry      *prometheus.Registry
	Handler       MetricsHandler
}

// NewPrometheus is PrometheusModule's constructor: it builds the registry,
// the exporter on it and the SDK provider reading through the exporter,
// and appends to the lifecycle the provider's shutdown. Without fx, pass
// any fx.Lifecycle (fxtest.NewLifecycle) and run its stop hook.
func NewPrometheus(p PrometheusParams) (PrometheusResult, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return PrometheusResult{}, fmt.Errorf("app: prometheus: register the Go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return PrometheusResult{}, fmt.Errorf("app: prometheus: register the process collector: %w", err)
	}
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return PrometheusResult{}, fmt.Errorf("app: prometheus: create the exporter: %w", err)
	}
	res := p.Resource
	if res == nil {
		res = resource.Default()
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	p.Lifecycle.Append(fx.StopHook(mp.Shutdown))
	handler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	return PrometheusResult{MeterProvider: mp, Registry: reg, Handler: handler}, nil
}
