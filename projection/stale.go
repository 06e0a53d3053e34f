package projection

import (
	"context"
	"fmt"

	"github.com/canonlog/canonlog/eventlog"
)

// StalePolicy says what CheckStale does about stale projections.
type StalePolicy int

const (
	// StaleRefuse fails with a *StaleError naming them. The default.
	StaleRefuse StalePolicy = iota
	// StaleRebuild rebuilds them.
	StaleRebuild
	// StaleIgnore reports them and carries on.
	StaleIgnore
	// StaleRebuildOnline reports them and carries on, like StaleIgnore,
	// for the caller to rebuild them online while it serves: the service
	// starts at once and each stale view is swapped in when its rebuild
	// is done (see docs/projections.md, "Deploying a new version").
	// CheckStale itself does not rebuild; app.Module runs the rebuild in
	// the background (Manager.RebuildStale).
	StaleRebuildOnline
)

func (p StalePolicy) String() string {
	switch p {
	case StaleRefuse:
		return "refuse"
	case StaleRebuild:
		return "rebuild"
	case StaleIgnore:
		return "ignore"
	case StaleRebuildOnline:
		return "rebuild-online"
	}
	return fmt.Sprintf("StalePolicy(%d)", int(p))
}

// ParseStalePolicy parses "refuse", "rebuild", "ignore" or
// "rebuild-online".
func ParseStalePolicy(s string) (StalePolicy, error) {
	for _, p := range []StalePolicy{StaleRefuse, StaleRebuild, StaleIgnore, StaleRebuildOnline} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("projection: stale policy %q: use refuse, rebuild, ignore or rebuild-online", s)
}

// CheckStale is the start-up check that keeps a service from serving a view
// built by older logic without saying so. It returns the status of every
// registered projection after applying policy to the stale ones.
func CheckStale(ctx context.Context, log *eventlog.Log, reg *Registry, policy StalePolicy) (Statuses, error) {
	sts, err := ReadStatus(ctx, log, reg)
	if err != nil {
		return nil, err
	}
	var stale []Status
	for _, s := range sts {
		if s.Stale {
			stale = append(stale, s)
		}
	}
	if len(stale) == 0 {
		return sts, nil
	}
	switch policy {
	case StaleRefuse:
		return sts, &StaleError{Stale: stale}
	case StaleRebuild:
		if _, err := Rebuild(ctx, log, reg, &RebuildOptions{StaleOnly: true}); err != nil {
			return sts, err
		}
		return ReadStatus(ctx, log, reg)
	case StaleIgnore, StaleRebuildOnline:
		return sts, nil
	default:
		return sts, fmt.Errorf("projection: unknown stale policy %d", int(policy))
	}
}
