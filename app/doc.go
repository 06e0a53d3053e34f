// Package app wires canonlog into services built with go.uber.org/fx. It is
// the only canonlog package that imports fx: everything it does is also
// available without fx through the eventlog, projection and migrations
// packages.
//
// Module provides the *sqlx.DB (opened from Config.DatabaseURL and closed on
// stop, or supplied by the service with WithDB or ProvideDB and then left
// open), the *projection.Registry assembled from every projection
// registered with AsProjection, and the *projection.Manager that assembles
// them with the *eventlog.Log, whose appends apply the registry. On start
// it runs the migrations (canonlog's core, then each projection's) and the
// stale-projection check, so a service never serves a view built by older
// logic without saying so. ProbeFailuresModule adds the reference
// projection and its query store. Consumers registered with AsConsumer
// run from start, after the migrations, to stop (ExampleAsConsumer). A
// metric.MeterProvider and a trace.TracerProvider in the graph, when there
// are any, measure and trace the log's appends; PrometheusModule provides
// the first, the OpenTelemetry SDK with a Prometheus exporter, and the
// handler of GET /metrics (ExamplePrometheusModule). A service's main
// (ExampleModule):
//
//	fx.New(
//		fx.Provide(app.ConfigFromEnv), // or fx.Supply(app.Config{…})
//		app.Module,                    // *sqlx.DB, *eventlog.Log, *projection.Registry
//		app.ProbeFailuresModule,       // probe_failures + *probefailures.Store
//		app.AsProjection(newHostSeen), // your own projection
//		fx.Provide(newAPI),            // uses *eventlog.Log, *probefailures.Store, …
//		fx.Invoke(func(*api) {}),
//	).Run()
//
// See docs/fx.md for the configuration variables, metrics and traces,
// supplying your own database and testing a service with fxtest.
package app
