// Command fleetd is a small fleet-management service built on canonlog
// with uber fx: agents post their events (probe results, heartbeats,
// apply reports) over HTTP, every event lands once in the canonical log,
// and the compliance gate reads which hosts fail which controls.
//
//	fleetd                                   # serve on 127.0.0.1:8080, sqlite:fleetd.db
//	CANONLOG_DATABASE_URL=postgres://… fleetd -addr :8080
//	fleetd rebuild [NAME…]                   # rebuild projections, fleetd's own included
//
// Endpoints:
//
//	POST /v1/agent-events                     {"host_id", "rollout_id", "event_id", "ts", "payload"}
//	GET  /v1/rollouts/{id}/failing-hosts?control=CIS-5.2.1
//	GET  /v1/rollouts/{id}/summary
//	GET  /v1/rollouts/{id}/hosts[?after=HOST&limit=N]
//	GET  /healthz
//
// Its fx graph (Options) is app.Module, app.ProbeFailuresModule, its own
// projection rollout_progress registered with app.AsProjection, and a
// lifecycle-managed net/http server. See docs/fx.md.
package main
