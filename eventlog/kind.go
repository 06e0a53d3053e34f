package eventlog

import "fmt"

// Kind says what an event records. The set is open: besides the predefined
// kinds, any name matching ^[a-z][a-z0-9_]{0,63}$ is allowed. The strings of
// the predefined kinds are stored in the database and never change.
type Kind string

// The predefined kinds, from the fleet control plane canonlog grew out of.
const (
	KindAgentEvent     Kind = "agent_event"
	KindPlanAction     Kind = "plan_action"
	KindEffect         Kind = "effect"
	KindGateDecision   Kind = "gate_decision"
	KindVerifyOutcome  Kind = "verify_outcome"
	KindManifestPoll   Kind = "manifest_poll"
	KindRolloutEvent   Kind = "rollout_event"
	maxKindLen              = 64
	kindPatternForDocs      = `^[a-z][a-z0-9_]{0,63}$`
)

// PredefinedKinds returns the seven predefined kinds in a fixed order.
func PredefinedKinds() []Kind {
	return []Kind{KindAgentEvent, KindPlanAction, KindEffect, KindGateDecision,
		KindVerifyOutcome, KindManifestPoll, KindRolloutEvent}
}

// Validate reports whether k is a well-formed kind. The error wraps
// ErrInvalidKind.
func (k Kind) Validate() error {
	if len(k) == 0 || len(k) > maxKindLen || k[0] < 'a' || k[0] > 'z' {
		return fmt.Errorf("%w: %q does not match %s", ErrInvalidKind, string(k), kindPatternForDocs)
	}
	for i := 1; i < len(k); i++ {
		c := k[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return fmt.Errorf("%w: %q does not match %s", ErrInvalidKind, string(k), kindPatternForDocs)
		}
	}
	return nil
}
