// Package eventlog is canonlog's append core: an append-only, canonical
// event log in one table, event_log, on PostgreSQL or SQLite.
//
// Every fact a service learns or decides is appended as an Entry and stored
// as an Event with a seq assigned by the database. The log never changes
// what it stored: the database itself refuses UPDATE, DELETE and TRUNCATE.
// An entry may carry an event id, which makes appending it idempotent:
// however often it is retried, it lands once.
//
// Projections (package projection) hang off the log through a Hook, which
// runs inside each append's transaction so that derived tables commit
// together with the events they derive from.
//
//	db, err := eventlog.OpenDB(ctx, "sqlite:canonlog.db")
//	if err != nil { … }
//	defer db.Close()
//	if _, err := migrations.Up(ctx, db); err != nil { … }
//	log, err := eventlog.New(db, nil)
//	if err != nil { … }
//	res, err := log.Append(ctx, eventlog.Entry{
//		Kind:    eventlog.KindAgentEvent,
//		HostID:  "host-1",
//		Payload: json.RawMessage(`{"type":"Heartbeat"}`),
//		EventID: "agent-1/42", // retry-safe
//	})
//
// Reads: Get by seq, Query with a Filter (by host, rollout, kinds, seq
// cursor, time range), Count of a filter's matches, TailStart to find where
// the last n matches begin, LastSeq, and Pages/Events to stream the whole
// log from any seq in bounded memory. Each has a Tx twin that reads inside
// the caller's transaction. Code outside this package reads event_log
// through these methods, never with SQL of its own.
//
// Projections write their own tables with their own SQL. For what differs
// between the backends, the package gives them what the log itself uses:
// FormatTime, ScanTime and NormalizeTime store a time.Time as event_log
// stores ts, and BackendOf tells PostgreSQL from SQLite (see
// docs/projections.md).
package eventlog
