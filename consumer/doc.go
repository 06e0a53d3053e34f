// Package consumer runs handlers on the log's events after they commit,
// from a durable position, one active instance per consumer.
//
// A projection's Apply runs inside the append's transaction and must not
// call the outside world. A consumer is what reacts to events after the
// fact: it follows the log in commit order with an eventlog.Follower
// (gap-free: on PostgreSQL an event that took a lower seq and committed
// late is delivered too) and keeps its position in the table
// canonlog_consumers (core migrations 00005, 00006), so that a restarted consumer
// resumes where it stopped. Two handler styles:
//
//   - HandleTx (transactional): the handler gets a transaction, and its
//     writes commit together with the consumer's new position. Database
//     effects happen exactly once: an asynchronous view is this.
//   - Handle (external): the handler gets one event at a time, and the
//     position is saved after it succeeds. At least once: after a crash
//     or a lost connection an event may be handled again, so the handler
//     uses the event's seq or event id as an idempotency key downstream.
//   - HandleBatch (external, by page): as Handle, with each page whole, so
//     a handler can pipeline its calls (publish every event, then wait for
//     every acknowledgement) and return once all had their effect.
//
// The position moves only from the one the instance read and under the
// generation it took the consumer over with (a fence), so an instance
// deposed by another, or by a reset, can never move it. On PostgreSQL an
// instance holds a session advisory lock for as long as it runs: a second
// instance with the same name waits for it and takes over when the first
// stops or its session ends (a killed process's session ends with its
// connection). Session advisory locks need a session of their own: they
// do not work through a transaction-pooling proxy (PgBouncer in
// transaction mode). SQLite has one writer and no advisory locks: run one
// instance per consumer there; a second deposes the first.
//
// A handler's failure is retried with capped exponential backoff; once the
// attempts are spent the consumer stops and says which event failed
// (FailStop, the default, recorded for Status), or parks the event in
// canonlog_consumer_parked and goes on (FailPark).
//
//	c, err := consumer.New(log, &consumer.Config{
//		Name:  "gate_alerts",
//		Kinds: []eventlog.Kind{eventlog.KindGateDecision},
//		Handle: func(ctx context.Context, ev eventlog.Event) error {
//			return notify(ctx, ev.Seq, ev.Payload) // idempotent by seq
//		},
//	})
//	if err != nil {
//		return err
//	}
//	return c.Run(ctx) // until ctx ends, or a failure stops it
package consumer
