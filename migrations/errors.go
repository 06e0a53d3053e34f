package migrations

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Test for them with errors.Is; the errors this package
// returns wrap them with the details.
var (
	// ErrUnknownSets is returned by Down and PlanDown when the database
	// holds migration sets that were not passed to them: another program
	// (a service with projections of its own) installed them, and their
	// tables may point into event_log, so that rolling back core would
	// fail halfway. Nothing is rolled back. The error is an
	// *UnknownSetsError.
	ErrUnknownSets = errors.New("the database holds migration sets that were not given")

	// ErrUnknownVersion is returned by Down and PlanDown when a set's
	// version table records an applied migration that the set has no file
	// for: a newer program applied it. Nothing is rolled back.
	ErrUnknownVersion = errors.New("an applied migration has no migration file")
)

// UnknownSetsError names the migration sets that Down and PlanDown found
// applied in the database but were not given. It unwraps to
// ErrUnknownSets.
type UnknownSetsError struct {
	// Sets are the names of the sets, sorted; each records its history in
	// the version table canonlog_migrations_<name>.
	Sets []string
}

func (e *UnknownSetsError) Error() string {
	tables := make([]string, len(e.Sets))
	for i, s := range e.Sets {
		tables[i] = CoreTable + "_" + s
	}
	return fmt.Sprintf("migrations: down refused, nothing was rolled back: %v: %s (version tables %s); "+
		"roll them back first with the program that registers them (its migrate down), "+
		"or drop their tables and version tables by hand",
		ErrUnknownSets, strings.Join(e.Sets, ", "), strings.Join(tables, ", "))
}

func (e *UnknownSetsError) Unwrap() error { return ErrUnknownSets }

// PartialError is returned by Down when rolling back a migration failed
// after Down had started: the migrations in RolledBack are rolled back,
// Failed and Remaining are still applied. Each migration is rolled back
// in a transaction of its own together with its version row (unless its
// file says NO TRANSACTION), so Failed is either wholly applied or, for a
// migration without a transaction, possibly half rolled back. Running Down
// again continues with what is still applied; Up restores what was rolled
// back.
type PartialError struct {
	RolledBack []Result   // the migrations rolled back before the failure, in order
	Failed     DownStep   // the migration whose rollback failed
	Remaining  []DownStep // the migrations after Failed, not attempted
	Err        error      // why Failed failed
}

func (e *PartialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "migrations: down stopped at %s %s: %v; ", e.Failed.Set, e.Failed.Source, e.Err)
	if len(e.RolledBack) == 0 {
		b.WriteString("nothing was rolled back before it")
	} else {
		done := make([]string, len(e.RolledBack))
		for i, r := range e.RolledBack {
			done[i] = r.Set + " " + r.Source
		}
		fmt.Fprintf(&b, "rolled back before it: %s", strings.Join(done, ", "))
	}
	left := make([]string, 0, 1+len(e.Remaining))
	for _, s := range append([]DownStep{e.Failed}, e.Remaining...) {
		left = append(left, s.Set+" "+s.Source)
	}
	fmt.Fprintf(&b, "; still applied: %s. Fix the cause and run down again: it continues with what is still applied (or run up to restore what was rolled back)",
		strings.Join(left, ", "))
	return b.String()
}

func (e *PartialError) Unwrap() error { return e.Err }
