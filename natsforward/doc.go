// Package natsforward forwards the log's events to a NATS JetStream
// stream, each exactly once and in the log's commit order, so that other
// machines consume canonlog through JetStream.
//
// A Forwarder is a consumer (package consumer) whose handler publishes
// each page of events with PublishMsgAsync and returns once JetStream
// acknowledged every message; the consumer then saves its position. A
// message is the event's payload, byte for byte, on a subject rendered
// from a template ("canonlog.{kind}.{host}" by default), with the event's
// other fields in headers (HeaderSeq, HeaderKind, HeaderTS, …) and
// Nats-Msg-Id "canonlog-<seq>".
//
// Exactly once, in order, across crashes:
//
//   - Every message expects the stream's last sequence to be its
//     predecessor's, and every message after a page's first also expects
//     its predecessor's message id: a message that another publisher, or
//     a killed forwarder's late message, got ahead of is refused, and so
//     is every message after it. Nothing lands out of order or after a
//     gap.
//   - A forwarder killed after publishing a page and before saving its
//     position reads the page again when it restarts. At its start, and
//     after any failed publish, it reads the stream's tail back to the
//     message of the consumer's last handled event and does not publish
//     again the events it finds there. It does not rely on JetStream's
//     duplicates window, which only covers a time window; the window
//     remains a second guard.
//   - On PostgreSQL the consumer's order is commit order, not always seq
//     order; the events found in the tail are skipped by seq, not by
//     "seq at most the last one".
//
// The stream must exist, take every subject the template renders, and
// hold only the forwarder's messages: a message it did not publish stops
// it (ErrStreamModified). NATS being unreachable does not stop it: it
// waits and tries again. See docs/consumers.md, "Forwarding to NATS
// JetStream".
//
//	fwd, err := natsforward.New(log, js, &natsforward.Config{
//		Stream:  "CANONLOG",
//		Subject: "canonlog.{kind}.{host}",
//	})
//	if err != nil {
//		return err
//	}
//	return fwd.Run(ctx) // until ctx ends, or the stream refuses it
package natsforward
