// Package bench is the harness behind `canonlog bench`: it measures each
// of canonlog's paths next to hand-written SQL doing the same work on the
// same database, round after round with the sides alternating, and
// returns the medians and their ratio (canonlog ÷ raw) as a Report.
//
//	r, err := bench.New(&bench.Config{
//		DatabaseURL: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
//		Scenarios:   []string{bench.ScenarioRebuild},
//		Events:      100000,
//	})
//	if err != nil {
//		return err
//	}
//	rep, err := r.Run(ctx)
//	if err != nil {
//		return err
//	}
//	return rep.WriteTable(os.Stdout)
//
// A run never touches the configured database's data: it works in scratch
// databases (internal/scratchdb) — schemas canonlog_bench_<random>_<n> on
// PostgreSQL, a directory next to the SQLite file — and removes them at the
// end, also on an error or an interrupt.
//
// # Data
//
// Every scenario appends or reads the same history: internal/fleetgen's,
// seed 1, of Config.Profile — realistic by default (a fleet's
// control-plane history, about 0.28 probe_failures rows per event), or
// dense (every event a probe result, one row per event). Event i is the
// same whoever generates it, so writers draw without sharing anything.
//
// # Rebuilds under load
//
// One scenario, rebuild-load, compares nothing with hand-written SQL: it
// fills a log of the history's events through AppendBatch, starts
// writers appending agent events one at a time and a follower at the head
// (as `canonlog tail -f`), each on a pool of its own as separate processes
// would be, and measures them while nothing else runs, during an online
// rebuild of probe_failures, an offline one and a verify (LoadResult). It
// runs only when named.
//
// # Hand-written SQL against event_log
//
// Outside package eventlog, this is the one package that holds SQL against
// event_log, on purpose: the raw side of every scenario is the alternative
// a user would write instead of canonlog (a prepared INSERT, COPY, a keyset
// loop, a set-based INSERT … SELECT deriving probe_failures), and the
// shared log of the reading scenarios is filled by COPY (prepared INSERTs
// on SQLite) of 10,000 events per transaction, which is setup, not
// measured. canonlog's own side of
// every scenario goes through the public API only: eventlog.Log,
// projection.Migrate and projection.Rebuild, probefailures.Store.
package bench
