package probefailures

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// FailureMatch selects the events that can add probe failures to a
// rollout: its agent events (the projection's Kinds) whose payload holds
// one of the projection's PayloadMarkers. An event it leaves out derives
// no row of the rollout, so a decision appended under
// eventlog.Condition{Match: FailureMatch(r), AfterSeq: seq} fails when a
// failure of r may have landed after seq. It is wider than the rows, never
// narrower: an observe-mode failure, which writes no row, or an agent
// event whose payload merely holds "fail" matches too, and fails such an
// append needlessly; its caller reads and decides again.
func FailureMatch(rolloutID string) eventlog.Filter {
	p := New()
	return eventlog.Filter{Kinds: p.Kinds(), RolloutID: rolloutID, PayloadContains: p.PayloadMarkers()}
}

// GateReading is what the compliance gate knows of a rollout at one point
// of the log: its failing hosts and controls, complete up to
// Condition.AfterSeq.
type GateReading struct {
	RolloutID string
	// FailingHosts is the number of distinct hosts failing at least one
	// control (CountFailingHosts).
	FailingHosts int
	// Controls are the rollout's failing controls (Summary).
	Controls []ControlSummary
	// Condition is FailureMatch(RolloutID) after the seq the reading is
	// complete up to: append the decision taken on the reading with
	// log.If(Condition), and it fails with an *eventlog.ConditionError
	// when a failure of the rollout may have landed since.
	Condition eventlog.Condition
}

// Gate reads CountFailingHosts and Summary of a rollout in one
// transaction of log.ReadForCondition(FailureMatch(rolloutID)): both see
// every failure of the rollout up to the returned Condition's AfterSeq
// and none after it, which is what a decision on them may rely on.
//
// log must be the log whose appends apply probe_failures inline (its
// Hook's registry holds the projection), on the database the Store reads:
// the view is then written in the transaction of each event, and the
// reading's completeness is the log's. On PostgreSQL the reading holds
// the rollout's append lock exclusively while it runs (appends to the
// rollout wait for two short queries); on SQLite it holds the write lock.
//
// A missing rollout id, or one holding a NUL byte, is ErrInvalidQuery.
func (s *Store) Gate(ctx context.Context, log *eventlog.Log, rolloutID string) (GateReading, error) {
	if err := checkRollout(rolloutID); err != nil {
		return GateReading{}, err
	}
	if log == nil {
		return GateReading{}, errors.New("probefailures: gate: log is nil: pass the *eventlog.Log that applies probe_failures")
	}
	g := GateReading{RolloutID: rolloutID}
	var readErr error // the queries' errors, which name themselves
	cond, err := log.ReadForCondition(ctx, FailureMatch(rolloutID), func(ctx context.Context, tx *sqlx.Tx) error {
		if g.FailingHosts, readErr = countFailingHosts(ctx, tx, rolloutID); readErr != nil {
			return readErr
		}
		g.Controls, readErr = summary(ctx, tx, rolloutID)
		return readErr
	})
	switch {
	case err != nil && err == readErr:
		return GateReading{}, err
	case err != nil:
		return GateReading{}, fmt.Errorf("probefailures: gate: %w", err)
	}
	g.Condition = cond
	return g, nil
}
