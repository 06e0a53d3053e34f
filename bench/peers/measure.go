package peers

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/canonlog/canonlog/internal/scratchdb"
)

// Scenario names, in the order they run and are reported.
const (
	scenarioSingle     = "single append, 1 client"
	scenarioBatch      = "batch of %d per call" // with Config.BatchSize
	scenarioReplay     = "full replay"
	scenarioConcurrent = "single append, %d clients" // with Config.Clients
)

// scenario is one row of the report.
type scenario struct {
	name string
	// per is the number of events each side handles per round.
	per int
	// warm prepares a side's fresh store, untimed, and returns how many
	// events it wrote.
	warm func(ctx context.Context, s store) (int, error)
	// round is one timed round (counted from 0) on a store to which
	// warm wrote the given number of events.
	round func(ctx context.Context, s store, written, round int) error
	// stored is how many events each store must hold at the end.
	stored func(written int) int64
}

func (r *Runner) scenarios() []scenario {
	c := r.cfg
	single := func(name string, clients, per int) scenario {
		// The warm-up opens every client's connection and prepares.
		warmup := 4 * clients
		return scenario{
			name: name, per: per,
			warm: func(ctx context.Context, s store) (int, error) {
				return warmup, fanOut(ctx, clients, 0, warmup, s.appendOne)
			},
			round: func(ctx context.Context, s store, written, round int) error {
				return fanOut(ctx, clients, written+round*per, per, s.appendOne)
			},
			stored: func(written int) int64 { return int64(written + c.Rounds*per) },
		}
	}
	batches := func(ctx context.Context, s store, first, n int) error {
		for i := first; i < first+n; i += c.BatchSize {
			if err := s.appendBatch(ctx, i, min(c.BatchSize, first+n-i)); err != nil {
				return err
			}
		}
		return nil
	}
	wantBytes := payloadBytes(0, c.ReplayEvents)
	return []scenario{
		single(scenarioSingle, 1, c.SingleEvents),
		single(fmt.Sprintf(scenarioConcurrent, c.Clients), c.Clients, c.ConcurrentEvents),
		{
			name: fmt.Sprintf(scenarioBatch, c.BatchSize), per: c.BatchEvents,
			warm: func(ctx context.Context, s store) (int, error) {
				return c.BatchSize, s.appendBatch(ctx, 0, c.BatchSize)
			},
			round: func(ctx context.Context, s store, written, round int) error {
				return batches(ctx, s, written+round*c.BatchEvents, c.BatchEvents)
			},
			stored: func(written int) int64 { return int64(written + c.Rounds*c.BatchEvents) },
		},
		{
			name: scenarioReplay, per: c.ReplayEvents,
			warm: func(ctx context.Context, s store) (int, error) {
				return c.ReplayEvents, batches(ctx, s, 0, c.ReplayEvents)
			},
			round: func(ctx context.Context, s store, written, _ int) error {
				n, b, err := s.replay(ctx, int64(written))
				switch {
				case err != nil:
					return fmt.Errorf("replay: %w", err)
				case n != int64(written) || b != wantBytes:
					return fmt.Errorf("replay read %d events with %d payload bytes, want %d with %d", n, b, written, wantBytes)
				}
				return nil
			},
			stored: func(written int) int64 { return int64(written) },
		},
	}
}

// measure runs one scenario: a fresh schema per available contender, the
// warm-up, then the rounds, the contenders taking turns in an order that
// rotates from round to round (so each leads once in as many rounds as
// there are contenders), with an untimed garbage collection before every
// turn so that no side pays for another's garbage. It then checks that
// every store holds the events it was given.
func (r *Runner) measure(ctx context.Context, set *scratchdb.Set, sc scenario) (res Result, err error) {
	type side struct {
		c     contender
		s     store
		db    *scratchdb.DB
		rates []float64
	}
	var sides []*side
	defer func() {
		// Pools first: a schema cannot be dropped under a connection
		// that still uses it.
		for _, sd := range sides {
			err = errors.Join(err, sd.s.close())
		}
		for _, sd := range sides {
			err = errors.Join(err, sd.db.Drop())
		}
	}()
	written := 0
	for _, c := range r.contenders {
		if c.unavailable != "" {
			continue
		}
		db, err := set.Create(ctx)
		if err != nil {
			return res, err
		}
		st := c.newStore()
		if cs, ok := st.(*canonlogStore); ok {
			cs.eventIDs = r.cfg.EventIDs
		}
		sd := &side{c: c, s: st, db: db}
		sides = append(sides, sd)
		u, err := r.connURL(db.URL)
		if err != nil {
			return res, err
		}
		if err := sd.s.open(ctx, u); err != nil {
			return res, fmt.Errorf("%s: open: %w", c.name, err)
		}
		if written, err = sc.warm(ctx, sd.s); err != nil {
			return res, fmt.Errorf("%s: warm-up: %w", c.name, err)
		}
	}
	for round := range r.cfg.Rounds {
		for k := range sides {
			sd := sides[(round+k)%len(sides)]
			runtime.GC()
			start := time.Now()
			if err := sc.round(ctx, sd.s, written, round); err != nil {
				return res, fmt.Errorf("%s: round %d: %w", sd.c.name, round+1, err)
			}
			rate := float64(sc.per) / time.Since(start).Seconds()
			sd.rates = append(sd.rates, rate)
			r.progress("%s: round %d/%d: %s %s events/s\n", sc.name, round+1, r.cfg.Rounds, sd.c.name, thousands(rate))
		}
	}
	res = Result{Name: sc.name, PerRound: sc.per}
	var ours []float64
	for _, sd := range sides {
		n, err := sd.s.count(ctx)
		if err != nil {
			return res, fmt.Errorf("%s: count the stored events: %w", sd.c.name, err)
		}
		if want := sc.stored(written); n != want {
			return res, fmt.Errorf("%s: the store holds %d events, want %d", sd.c.name, n, want)
		}
		if sd.c.name == Canonlog {
			ours = sd.rates
		}
	}
	for _, c := range r.contenders {
		sr := SideResult{Name: c.name, Unavailable: c.unavailable}
		if i := slices.IndexFunc(sides, func(sd *side) bool { return sd.c.name == c.name }); i >= 0 {
			sd := sides[i]
			sr.Runs = sd.rates
			sr.Median = median(sd.rates)
			sr.Stored = sc.stored(written)
			if c.name != Canonlog && ours != nil {
				ratios := make([]float64, len(ours))
				for j := range ours {
					ratios[j] = ours[j] / sd.rates[j]
				}
				sr.Ratio = median(ratios)
			}
		}
		res.Sides = append(res.Sides, sr)
	}
	return res, nil
}

func (r *Runner) progress(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, format, args...)
	}
}

// fanOut calls f for events first … first+n-1 from clients goroutines,
// client c taking events first+c, first+c+clients, …; the first error
// stops them all.
func fanOut(ctx context.Context, clients, first, n int, f func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		once sync.Once
		ferr error
	)
	for c := range clients {
		wg.Go(func() {
			for i := first + c; i < first+n; i += clients {
				if err := f(ctx, i); err != nil {
					once.Do(func() { ferr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return ferr
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}
