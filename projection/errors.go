package projection

import (
	"errors"
	"fmt"
	"strings"

	"github.com/canonlog/canonlog/eventlog"
)

var (
	// ErrInvalidProjection is returned by Register for a malformed name or
	// version, and by Rebuild when a projection rebuilt online writes a
	// table outside its copy (its SQL names a live table, qualified, or
	// one it does not list in Tables).
	ErrInvalidProjection = errors.New("invalid projection")

	// ErrDuplicateName is returned by Register when a projection of the same
	// name is already registered.
	ErrDuplicateName = errors.New("projection name already registered")

	// ErrUnknownProjection is returned by Rebuild and Verify for a name that
	// is not registered.
	ErrUnknownProjection = errors.New("unknown projection")

	// ErrStale is returned by CheckStale when projections were built by
	// older logic (or never built) and the policy is to refuse. The error is
	// a *StaleError.
	ErrStale = errors.New("stale projections")

	// ErrUnregistered is returned by Manager's appends, Rebuild and Verify
	// for a projection that the database records but the registry lacks:
	// another binary (the service that owns it) registers it. The error is
	// an *UnregisteredError.
	ErrUnregistered = errors.New("projection registered by another binary")

	// ErrNotInstalled is returned by Manager's appends, Rebuild and Verify
	// for a registered projection that the database has not installed
	// (Migrate installs it). The error is a *NotInstalledError.
	ErrNotInstalled = errors.New("projection not installed")

	// ErrSchema is returned by Manager.CheckSchema when canonlog's tables
	// or a registered projection's are missing. The error is a
	// *SchemaError.
	ErrSchema = errors.New("schema not migrated")

	// ErrDifferent is wrapped by the *DifferenceError that
	// VerifyResults.Err returns when a live view differs from a fresh
	// derivation.
	ErrDifferent = errors.New("projection differs from the log")

	// ErrNotVerifiable is returned by Verify for a projection that
	// implements neither Tabler nor Checksummer.
	ErrNotVerifiable = errors.New("projection cannot be verified")
	// ErrViewChanged is returned by an online rebuild whose projection's
	// tables were altered while it ran (a migration applied meanwhile):
	// swapping its copy in would undo the change, so it stops and leaves
	// the live view as it is. Rebuild again.
	ErrViewChanged = errors.New("projection's tables changed during the rebuild")
)

// ApplyError reports a projection that failed to apply an event. The append
// (or rebuild) it happened in was rolled back.
type ApplyError struct {
	Projection string
	// Seq is the event that failed, or 0 when a batch failed without naming
	// one; FirstSeq and LastSeq bound the batch.
	Seq               int64
	FirstSeq, LastSeq int64
	// Appending reports that the events were being appended (the error
	// came from AfterAppend), not replayed from the log. Their seqs are
	// then the ones the failed append was given, and no stored event has
	// them: on PostgreSQL they stay unused, on SQLite the next append may
	// take them. The message says so.
	Appending bool
	Err       error
}

func (e *ApplyError) Error() string {
	const notStored = " (not stored: the append was rolled back)"
	switch {
	case e.Appending && e.Seq != 0:
		return fmt.Sprintf("projection %s: event at seq %d%s: %v", e.Projection, e.Seq, notStored, e.Err)
	case e.Appending:
		return fmt.Sprintf("projection %s: events at seqs %d..%d%s: %v", e.Projection, e.FirstSeq, e.LastSeq, notStored, e.Err)
	case e.Seq != 0:
		return fmt.Sprintf("projection %s: event %d: %v", e.Projection, e.Seq, e.Err)
	}
	return fmt.Sprintf("projection %s: events %d..%d: %v", e.Projection, e.FirstSeq, e.LastSeq, e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// seqError names the event a batch apply failed on.
type seqError struct {
	seq int64
	err error
}

func (e *seqError) Error() string { return fmt.Sprintf("event %d: %v", e.seq, e.err) }
func (e *seqError) Unwrap() error { return e.err }

// EventError wraps err with the seq of the event it concerns. Batch
// appliers use it so that the ApplyError canonlog returns names the event.
func EventError(seq int64, err error) error {
	if err == nil {
		return nil
	}
	return &seqError{seq: seq, err: err}
}

// StaleError lists the projections that need a rebuild.
type StaleError struct {
	Stale []Status
}

func (e *StaleError) Error() string {
	parts := make([]string, len(e.Stale))
	for i, s := range e.Stale {
		switch {
		case s.BuiltVersion == 0:
			parts[i] = fmt.Sprintf("%s (version %d, never built)", s.Name, s.Version)
		case s.BuiltVersion != s.Version:
			parts[i] = fmt.Sprintf("%s (version %d, built at version %d)", s.Name, s.Version, s.BuiltVersion)
		default:
			parts[i] = fmt.Sprintf("%s (version %d, seq %d appended without it by another binary)", s.Name, s.Version, s.DriftSeq)
		}
	}
	return fmt.Sprintf("stale projections, rebuild them before serving (projection.Rebuild with StaleOnly, or the stale policy \"rebuild\"): %s", strings.Join(parts, ", "))
}

func (e *StaleError) Unwrap() error { return ErrStale }

// UnregisteredError reports projections that the database records but this
// binary's registry lacks, met by an append of a kind they consume, or
// named to Rebuild or Verify.
type UnregisteredError struct {
	// Op is "append", "rebuild" or "verify".
	Op string
	// Names are the projections, in name order.
	Names []string
	// Kind is the refused append's kind (an append of several kinds names
	// the last one that a projection in Names consumes).
	Kind eventlog.Kind
}

// namesSubject phrases names as a sentence's subject ("projection a is",
// "projections a, b are") and the pronoun that refers back to it.
func namesSubject(names []string) (subject, them string) {
	if len(names) > 1 {
		return "projections " + strings.Join(names, ", ") + " are", "them"
	}
	return "projection " + strings.Join(names, ", ") + " is", "it"
}

func (e *UnregisteredError) Error() string {
	subject, them := namesSubject(e.Names)
	if e.Op == "append" {
		return fmt.Sprintf("append of kind %s refused: %s recorded in this database as consuming that kind, and this binary does not register %s, so the view would miss the event; append with the binary that registers %s (such as the service owning %s), or allow drift and then rebuild %s with that binary",
			e.Kind, subject, them, them, them, them)
	}
	return fmt.Sprintf("%s: %s registered by another binary, not this one: run %s with the binary that registers %s (such as the service's own operator command)",
		e.Op, subject, e.Op, them)
}

func (e *UnregisteredError) Unwrap() error { return ErrUnregistered }

// SchemaError reports a table that CheckSchema could not read.
type SchemaError struct {
	Table string
	Err   error
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("no table %s (%v): migrate the database first", e.Table, e.Err)
}

func (e *SchemaError) Unwrap() []error { return []error{ErrSchema, e.Err} }

// DifferenceError reports projections whose live view differs from a fresh
// derivation of the log (VerifyResults.Err).
type DifferenceError struct {
	Results []VerifyResult
}

func (e *DifferenceError) Error() string {
	parts := make([]string, len(e.Results))
	for i, r := range e.Results {
		if r.Missing+r.Extra > 0 {
			parts[i] = fmt.Sprintf("%s (%d missing, %d extra)", r.Name, r.Missing, r.Extra)
		} else {
			parts[i] = fmt.Sprintf("%s (checksum %s, fresh %s)", r.Name, r.LiveChecksum, r.FreshChecksum)
		}
	}
	return fmt.Sprintf("projections differ from a fresh derivation of the log, rebuild them: %s", strings.Join(parts, ", "))
}

func (e *DifferenceError) Unwrap() error { return ErrDifferent }

// NotInstalledError reports registered projections that the database has
// not installed, met by an append of a kind they consume, or named to
// Rebuild or Verify. Migrate installs them.
type NotInstalledError struct {
	// Op is "append", "rebuild" or "verify".
	Op string
	// Names are the projections, in name order.
	Names []string
	// Kind is the refused append's kind.
	Kind eventlog.Kind
}

func (e *NotInstalledError) Error() string {
	subject, _ := namesSubject(e.Names)
	if e.Op == "append" {
		return fmt.Sprintf("append of kind %s refused: %s registered but not installed in this database, so it would miss the event; migrate the database first (install it), or append with the binary this database belongs to", e.Kind, subject)
	}
	return fmt.Sprintf("%s: %s registered but not installed in this database: migrate the database first", e.Op, subject)
}

func (e *NotInstalledError) Unwrap() error { return ErrNotInstalled }
