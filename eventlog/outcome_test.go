package eventlog

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/lib/pq"

	"github.com/canonlog/canonlog/internal/dbutil"
)

// TestOutcomeError: a COMMIT lost with its connection says the append may
// have committed and stays retryable; a failed BEGIN or COMMIT is named as
// the append's; other errors pass through unchanged.
func TestOutcomeError(t *testing.T) {
	lostCommit := &dbutil.CommitError{Err: driver.ErrBadConn}
	refusedCommit := &dbutil.CommitError{Err: &pq.Error{Code: "23505", Message: "duplicate key"}}
	begin := fmt.Errorf("%w: %w", dbutil.ErrBegin, driver.ErrBadConn)
	other := errors.New("projection probe_failures: event 7: boom")

	for _, c := range []struct {
		name       string
		in         error
		want       string
		maybeSaved bool
		retryable  bool
	}{
		{"lost commit", lostCommit, "eventlog: append: commit: driver: bad connection", true, true},
		{"refused commit", refusedCommit, "eventlog: append: commit: pq: duplicate key", false, false},
		{"failed begin", begin, "eventlog: append: begin transaction: driver: bad connection", false, true},
		{"other", other, other.Error(), false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := outcomeError(c.in)
			if !strings.HasPrefix(got.Error(), c.want) {
				t.Fatalf("error %q, want it to start with %q", got, c.want)
			}
			if saved := strings.Contains(got.Error(), "may have committed"); saved != c.maybeSaved {
				t.Fatalf("error %q: says it may have committed = %v, want %v", got, saved, c.maybeSaved)
			}
			if Retryable(got) != c.retryable {
				t.Fatalf("Retryable(%q) = %v, want %v", got, !c.retryable, c.retryable)
			}
			if !errors.Is(got, c.in) {
				t.Fatalf("error %q does not wrap %q", got, c.in)
			}
		})
	}
}

// TestAutocommitError: an autocommitted append whose answer was lost may
// have committed, and says so; one refused by the server, or whose
// connection failed before the statement went out, did not.
func TestAutocommitError(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name       string
		in         error
		maybeSaved bool
		retryable  bool
	}{
		{"answer lost", reset, true, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true, true},
		{"dial refused", refused, false, true},
		{"bad connection", driver.ErrBadConn, false, true},
		{"shutting down", &pq.Error{Code: "57P01", Message: "terminating connection"}, false, true},
		{"refused by the server", &pq.Error{Code: "23514", Message: "check"}, false, false},
		{"cancelled", context.Canceled, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := autocommitError(c.in)
			if saved := strings.Contains(got.Error(), "may have committed"); saved != c.maybeSaved {
				t.Fatalf("error %q: says it may have committed = %v, want %v", got, saved, c.maybeSaved)
			}
			if Retryable(got) != c.retryable {
				t.Fatalf("Retryable(%q) = %v, want %v", got, !c.retryable, c.retryable)
			}
			if !errors.Is(got, c.in) {
				t.Fatalf("error %q does not wrap %q", got, c.in)
			}
		})
	}
}
