package natsforward

import "errors"

// ErrInvalidConfig is returned by New for a configuration it cannot run:
// a missing stream name, a malformed subject template, a bad option. The
// message says which and how to fix it.
var ErrInvalidConfig = errors.New("invalid forwarder configuration")

// ErrStream is returned by Forwarder.Run when the stream cannot take the
// forwarder's messages: it does not exist, JetStream is not enabled, or
// the stream's subjects do not cover the subjects the template renders.
// Nothing was published.
var ErrStream = errors.New("the stream cannot take the forwarder's messages")

// ErrStreamModified is returned by Forwarder.Run when the stream holds a
// message this forwarder did not publish (another publisher, or another
// forwarder's consumer name), found at its start or after a publish was
// refused because the stream's last sequence was not the one expected.
// The forwarder stops before publishing anything more: the stream must
// hold only its messages for "the stream equals the log" to hold.
var ErrStreamModified = errors.New("the stream holds a message the forwarder did not publish")

// ErrUnpublishable is the error the forwarder's handler fails an event
// with when no retry can publish it: a message larger than the
// connection's or the stream's limit, or a subject longer than
// MaxSubjectBytes. The consumer's failure policy (Config.OnFailure) then
// applies to the event.
var ErrUnpublishable = errors.New("the event cannot be published")

// ErrRunning is returned by Forwarder.Run when the same Forwarder is
// already running: run one Run per Forwarder at a time.
var ErrRunning = errors.New("the forwarder is already running")
