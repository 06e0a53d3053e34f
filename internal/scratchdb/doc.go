// Package scratchdb makes throwaway databases next to a given one and
// removes them afterwards: the per-test databases of dbtest, the scratch
// logs of the bench harness and of rebuildmem.
//
// A Set is one group of scratch databases under one random name. On
// PostgreSQL each database is a schema of the base URL's database, named
// after the set and numbered (canonlog_bench_1a2b3c4d5e6f_1, …_2), and
// reached through the base URL with search_path pinned to it. On SQLite
// each is a file in a directory of the set's own. Close drops every
// database the set made, also on failure paths: a database whose creation
// failed halfway is dropped if it exists.
//
//	set, err := scratchdb.New(baseURL, &scratchdb.Config{Prefix: "canonlog_bench"})
//	if err != nil {
//		return err
//	}
//	defer set.Close()
//	sdb, err := set.Create(ctx)
//	if err != nil {
//		return err
//	}
//	db, err := eventlog.OpenDB(ctx, sdb.URL) // close it before set.Close
//
// New connects to nothing, as sql.Open: the first Create does, and Ping
// checks the server up front. A Set holds no connection between its
// creates and drops.
//
// Name the prefix so that a leftover can be traced: CI fails a run that
// leaves a schema named canonlog_test_… behind, so tests use a prefix
// starting with canonlog_test (dbtest does).
package scratchdb
