// Command fleetd is a small fleet-management service built on canonlog
// with uber fx: agents post their events (probe results, heartbeats,
// apply reports) over HTTP, every event lands once in the canonical log,
// and the compliance gate reads which hosts fail which controls.
//
// fleetd is a command tree: serve, and canonlog's commands (package
// canonlogcli) mounted with fleetd's projections, probe_failures and
// rollout_progress, and fleetd's default database, sqlite:fleetd.db.
// Without a command it serves, so that a deployment configured through
// the environment keeps working; flags take two dashes.
//
//	fleetd                                   # serve on 127.0.0.1:8080, sqlite:fleetd.db
//	CANONLOG_DATABASE_URL=postgres://… fleetd serve --addr :8080
//	fleetd migrate up                        # canonlog's commands, with fleetd's projections
//	fleetd rebuild rollout_progress          # or --stale, --all
//	fleetd verify
//	fleetd status
//	fleetd serve --nats-url nats://nats:4222 --nats-stream CANONLOG   # and forward every event
//	fleetd --help                            # every command
//
// Callers are authenticated with bearer tokens (serve --tokens-file;
// fleetd token issue|revoke|list edit the file) and/or client
// certificates (serve --tls-client-ca, with --tls-cert and --tls-key; a
// certificate's subject CN is its agent's host). An agent posts only its
// own host's events, its event ids stored in its host's namespace; the
// reads, gate decisions and /metrics need an operator's credential.
// Without authentication fleetd serves only on loopback, unless
// --insecure-no-auth. See docs/deploying-fleetd.md.
//
// Endpoints:
//
//	POST /v1/agent-events                     {"host_id", "rollout_id", "event_id", "ts", "payload"}
//	GET  /v1/rollouts/{id}/failing-hosts?control=CIS-5.2.1
//	GET  /v1/rollouts/{id}/summary              {"rollout_id", "failing_hosts", "controls", "seq"}
//	POST /v1/rollouts/{id}/gate-decisions       {"event_id", "decision", "read_seq", "reason"}
//	GET  /v1/rollouts/{id}/hosts[?after=HOST&limit=N]
//	GET  /healthz
//	GET  /metrics                             the Prometheus text format
//
// Every error is a JSON body {"error", "field"}, the mux's 404 and 405
// included. A POST needs Content-Type: application/json (else 415,
// nothing written); a rollout id or query parameter that is not a valid
// percent-encoding, not UTF-8 or holds a NUL is 400 naming it, before
// the database. fleetd serves at most --max-concurrent-requests (64)
// requests at once, GET /metrics aside, and gives each
// --request-timeout (10s) to get its database work done: past either,
// and on a transient database failure (eventlog.Retryable), the answer
// is 503 with Retry-After, and an agent retries with the same event_id.
// Config.Limits holds these and the server's timeouts and header limit;
// docs/deploying-fleetd.md ("Limits") lists them all. A serve that
// cannot start says why in one line.
//
// Every request is logged once answered ("fleetd: request": method, the
// route it matched, never the path with its ids, status, duration) and
// timed in http.server.request.duration; GET /metrics serves those, the
// log's metrics (docs/observability.md) and the Go runtime's, through
// app.PrometheusModule. With a TracerProvider (Config.TracerProvider;
// serve builds one sending spans over OTLP/HTTP with
// --otlp-traces-endpoint or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) each
// request is a server span continuing the trace of its traceparent
// header, parent of the log's append spans. Stopping logs
// "fleetd: shutting down" and, once done, "fleetd: stopped".
//
// The compliance gate reads a rollout's summary, decides, and posts the
// decision with the summary's seq as read_seq. fleetd appends it, as a
// gate_decision event, only if no probe failure of the rollout landed
// after read_seq (probefailures.FailureMatch); otherwise it answers 409
// naming the failure, and the gate reads the summary again and decides
// again. Two replicas of a gate that read, decide and post at once
// therefore never both record a decision on an out-of-date summary. See
// docs/fx.md for the answers and docs/deciding.md for the loop.
//
// With --nats-url (FLEETD_NATS_URL) serve also forwards every event of
// the log to a NATS JetStream stream: --nats-stream (FLEETD_NATS_STREAM)
// names the stream, which must exist, and --nats-subject
// (FLEETD_NATS_SUBJECT) the subject template, "canonlog.{kind}.{host}"
// by default. The forwarder (package natsforward) runs in the fx app on a
// lifecycle hook of its own; it waits for a NATS server that is down, and
// stops fleetd when the stream is missing or holds another publisher's
// messages. See docs/consumers.md, "Forwarding to NATS JetStream".
//
// Its fx graph (Options) is app.PrometheusModule, app.Module, its
// projections registered with app.AsProjection, the stores over them, and
// a lifecycle-managed net/http server. The projections come from one function, projections(), which the
// command tree takes them from too: what the service applies and what its
// operators rebuild cannot disagree. See docs/fx.md.
package main
