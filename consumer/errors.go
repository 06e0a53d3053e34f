package consumer

import (
	"errors"
	"fmt"
)

// ErrInvalidConfig is returned by New for a configuration it cannot run.
var ErrInvalidConfig = errors.New("invalid consumer configuration")

// ErrDeposed is returned by Consumer.Run when another instance took the
// consumer over (or an operator reset it) while it ran: its position was
// not where this instance left it, and this instance changed nothing
// since.
var ErrDeposed = errors.New("consumer deposed by another instance")

// HandlerError is returned by Consumer.Run when the handler failed on an
// event as many times as Config.Attempts allows and the policy is
// FailStop. The consumer's position stays before the event, and Status
// shows the failure until the consumer handles the event.
type HandlerError struct {
	Consumer string
	Seq      int64 // the event the handler failed on
	Attempts int
	Err      error // the last attempt's error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("consumer %s: event %d failed %d times: %v", e.Consumer, e.Seq, e.Attempts, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }
