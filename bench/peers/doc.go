// Package peers measures canonlog next to its peers on the same workload,
// against the same PostgreSQL server, in one run, and returns one table
// of events/s (issue 15):
//
//   - raw lib/pq: hand-written database/sql code on canonlog's own
//     event_log table (so both maintain the same indexes and triggers);
//   - canonlog: eventlog.Log without a hook, a pure log;
//   - hallgren/eventsourcing: its SQL event store; not measured when the
//     module proxy does not serve a version with a PostgreSQL store
//     (HallgrenUnavailable says why);
//   - watermill-sql: its default PostgreSQL schema and offsets adapters,
//     publisher and subscriber.
//
// Every side runs four scenarios: single appends from one client, single
// appends from Config.Clients clients at once, batches of
// Config.BatchSize events per call, and a full replay of a log written
// beforehand. Each event is an agent event of one of 2,000 hosts and 40
// rollouts with a probe-result payload of about 260 bytes; no side gives
// events an idempotency key, since no peer measured keeps a uniqueness
// key on one.
//
//	r, err := peers.New(&peers.Config{DatabaseURL: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"})
//	if err != nil {
//		return err
//	}
//	rep, err := r.Run(ctx)
//	if err != nil {
//		return err
//	}
//	return rep.WriteTable(os.Stdout)
//
// Each side of each scenario works in a fresh schema of its own
// (internal/scratchdb: canonlog_peers_<random>_<n>, reached through
// search_path), dropped when the scenario ends, and also when Run fails
// or its context is cancelled. The sides take turns round after round in
// an order that rotates, with an untimed warm-up before the first round
// (it opens the clients' connections and prepares statements) and an
// untimed garbage collection before every turn. After the rounds, Run
// counts each store's events by SQL and refuses a store that does not
// hold exactly what it was given; a replay that reads back a different
// number of events or payload bytes fails the run too.
//
// With Config.Latency every side connects through a proxy that holds each
// message that long in each direction: the server as if across a network,
// where round trips cost what they do in production. The report gives the
// round trip measured through the proxy.
//
// This is a Go module of its own, with a replace of the library to ../..,
// so that the library's go.mod never requires the peers. Its command is
// cmd/peersbench:
//
//	cd bench/peers && go run ./cmd/peersbench
package peers
