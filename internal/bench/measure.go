package bench

import (
	"context"
	"runtime"
	"slices"
	"time"
)

// side is one side's work for one round: it returns how many events (or
// queries) it handled.
type side func(ctx context.Context) (int, error)

// alternate runs the two sides round after round, the first side of each
// round alternating, with an untimed garbage collection before every turn
// so neither pays for the other's garbage, and returns the figures.
func (r *run) alternate(ctx context.Context, name, unit string, ours, raw side) (Result, error) {
	res := Result{Name: name, Unit: unit, Target: targets[name]}
	var ratios []float64
	timed := func(f side) (float64, int, error) {
		runtime.GC()
		start := time.Now()
		n, err := f(ctx)
		return float64(n) / time.Since(start).Seconds(), n, err
	}
	for round := range r.cfg.Rounds {
		sides := []side{ours, raw}
		if round%2 == 1 {
			sides = []side{raw, ours}
		}
		var rates [2]float64
		for i, f := range sides {
			rate, n, err := timed(f)
			if err != nil {
				return res, err
			}
			rates[i], res.PerRound = rate, n
		}
		if round%2 == 1 {
			rates[0], rates[1] = rates[1], rates[0]
		}
		res.CanonlogRuns = append(res.CanonlogRuns, rates[0])
		res.RawRuns = append(res.RawRuns, rates[1])
		ratios = append(ratios, rates[0]/rates[1])
	}
	res.Canonlog, res.Raw, res.Ratio = median(res.CanonlogRuns), median(res.RawRuns), median(ratios)
	res.RatioMin, res.RatioMax = slices.Min(ratios), slices.Max(ratios)
	res.Met = res.Ratio >= res.Target
	return res, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// scenario runs the named scenario, sized from Config.Events.
func (r *run) scenario(ctx context.Context, name string) (Result, error) {
	switch name {
	case ScenarioAppend1:
		return r.appends(ctx, name, 1, max(r.cfg.Events/40, 10))
	case ScenarioAppend16:
		return r.appends(ctx, name, r.cfg.Clients, max(r.cfg.Events/20, r.cfg.Clients))
	case ScenarioAppendBatch:
		return r.appendBatch(ctx, max(r.cfg.Events/2000, 1))
	case ScenarioRead:
		return r.read(ctx)
	case ScenarioRebuild:
		return r.rebuild(ctx)
	default:
		return r.query(ctx)
	}
}
