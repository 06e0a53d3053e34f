package main

import (
	"strings"

	"go.uber.org/dig"
)

// startupError is err, from fx.New or Start, as a message an operator can
// act on: the error the failing constructor or hook returned (fx and dig
// frame it with the graph's function names and source paths, which say
// nothing about the fix), without the package prefixes canonlog's
// libraries put on their errors, and naming serve's flag where the
// library names its Config field. It unwraps to err.
func startupError(err error) error {
	msg := dig.RootCause(err).Error()
	for _, prefix := range packagePrefixes {
		msg = strings.TrimPrefix(msg, prefix)
		msg = strings.ReplaceAll(msg, ": "+prefix, ": ")
	}
	msg = strings.ReplaceAll(msg, "(Config.DatabaseURL, ", "(--database-url, ")
	return &readableError{msg: msg, err: err}
}

// packagePrefixes begin the errors of canonlog's packages, and of
// fleetd's own components: the command line puts its own "fleetd: "
// before the message.
var packagePrefixes = []string{"app: ", "eventlog: ", "projection: ", "migrations: ", "probefailures: ", "natsforward: ", "fleetd: "}

// readableError is an error with a message rewritten for the command
// line.
type readableError struct {
	msg string
	err error
}

func (e *readableError) Error() string { return e.msg }
func (e *readableError) Unwrap() error { return e.err }
