package bench

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/canonlog/canonlog/eventlog"
)

// The targets of rebuild-load (issue 14).
const (
	targetP99Ratio        = 2.0  // append p99 during an online rebuild, ÷ baseline p99
	targetStallMS         = 250  // the longest append during an online rebuild or a verify
	goalSwapLockMS        = 100  // the online rebuild's swap lock
	targetTailLagMS       = 1000 // the follower's lag during an online rebuild and a verify
	targetOnlineVsOffline = 0.9  // online rebuild events/s ÷ offline
)

// LoadResult is the rebuild-load scenario's figures. Times are in
// milliseconds.
type LoadResult struct {
	Events         int     `json:"events"` // the log's size when the writers start
	Writers        int     `json:"writers"`
	WriteRate      float64 `json:"write_rate,omitempty"`     // the writers' cap in appends/s; 0: none
	GentleRebuild  bool    `json:"gentle_rebuild,omitempty"` // the online rebuild was gentle (projection.RebuildOptions.Gentle)
	PollIntervalMS float64 `json:"tail_poll_interval_ms"`
	BaselineMS     float64 `json:"baseline_ms"`
	FillSeconds    float64 `json:"fill_seconds"`
	// Cases are baseline, online-rebuild, offline-rebuild and verify, in
	// the order they ran.
	Cases []LoadCase `json:"cases"`
	// OnlineVsOffline is the online rebuild's events/s ÷ the offline
	// rebuild's, in this run.
	OnlineVsOffline float64  `json:"online_vs_offline"`
	Targets         []Target `json:"targets"`
}

// LoadCase is one window of rebuild-load: what the writers and the
// follower saw while nothing else ran (baseline), or while a rebuild or
// a verify ran.
type LoadCase struct {
	Name     string  `json:"name"`
	WindowMS float64 `json:"window_ms"`
	// Appends completed within the window, and their rate.
	Appends          int     `json:"appends"`
	AppendsPerSecond float64 `json:"appends_per_second"`
	// Measured counts the appends in flight at some time in the window
	// (begun before its end, ended after its start), whose latencies the
	// percentiles cover, failed ones included. MaxMS is the longest stall
	// a writer saw.
	Measured int     `json:"measured"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	// Failed counts measured appends that failed; Busy those of them that
	// failed on SQLite's busy timeout.
	Failed int `json:"failed"`
	Busy   int `json:"busy"`
	// PoolWaits and PoolWaitMS are the writers' waits for a connection of
	// their pool during the window (database/sql's WaitCount and
	// WaitDuration).
	PoolWaits  int64   `json:"pool_waits"`
	PoolWaitMS float64 `json:"pool_wait_ms"`
	// LockSamples is how often PostgreSQL's sessions were sampled during
	// the window (every 20 ms), LockWaitSamples how many samples found a
	// writer waiting on a lock, MaxLockWaiters the most found at once.
	// Zero on SQLite.
	LockSamples     int `json:"lock_samples"`
	LockWaitSamples int `json:"lock_wait_samples"`
	MaxLockWaiters  int `json:"max_lock_waiters"`
	// OtherTxMS is the age of the oldest transaction (holding a
	// transaction id) of another client of the PostgreSQL server seen by
	// those samples: a follower waits for every such transaction, so a
	// long one explains a tail lag that the run did not cause. Zero on
	// SQLite.
	OtherTxMS float64 `json:"other_tx_ms"`
	// Tail is the follower's lag on the measured appends that succeeded.
	Tail    TailLag         `json:"tail"`
	Rebuild *RebuildFigures `json:"rebuild,omitempty"`
	Verify  *VerifyFigures  `json:"verify,omitempty"`
}

// TailLag is how long after an append returned the follower delivered its
// event.
type TailLag struct {
	Events      int     `json:"events"`
	P50MS       float64 `json:"p50_ms"`
	P99MS       float64 `json:"p99_ms"`
	MaxMS       float64 `json:"max_ms"`
	Undelivered int     `json:"undelivered"` // still not delivered a minute after the window
	// OwnP99MS and OwnMaxMS estimate the lag the run caused itself: on
	// PostgreSQL each event's lag counts from the last sample (every 20
	// ms) at which a transaction of another client of the server, begun
	// before the append returned, was still running, if that is later.
	// Such a transaction holds every follower back (its transaction id
	// may be older than the event's), whatever the run does. The same as
	// P99MS and MaxMS on SQLite.
	OwnP99MS float64 `json:"own_p99_ms"`
	OwnMaxMS float64 `json:"own_max_ms"`
}

// RebuildFigures is projection.RebuildResult's figures.
type RebuildFigures struct {
	Online          bool    `json:"online"`
	OfflineReason   string  `json:"offline_reason,omitempty"`
	DurationMS      float64 `json:"duration_ms"`
	Events          int64   `json:"events"`
	EventsPerSecond float64 `json:"events_per_second"`
	LockHeldMS      float64 `json:"lock_held_ms"`
	CatchUpRounds   int     `json:"catch_up_rounds"`
	CatchUpEvents   int64   `json:"catch_up_events"`
	SwapEvents      int64   `json:"swap_events"`
	Rows            int64   `json:"rows"`
}

// VerifyFigures is a verify's figures.
type VerifyFigures struct {
	DurationMS      float64 `json:"duration_ms"`
	Events          int64   `json:"events"`
	EventsPerSecond float64 `json:"events_per_second"`
	Equal           bool    `json:"equal"`
}

// Target is one of the targets, as this run met it or not. A
// goal is what to aim for beyond the target.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
	Goal bool   `json:"goal,omitempty"`
}

// Case returns the case named name, nil when the run has none.
func (lr *LoadResult) Case(name string) *LoadCase {
	for i := range lr.Cases {
		if lr.Cases[i].Name == name {
			return &lr.Cases[i]
		}
	}
	return nil
}

// evaluate sets OnlineVsOffline and the targets from the cases.
func (lr *LoadResult) evaluate(d eventlog.Backend) {
	base, on, off, ver := lr.Case(CaseBaseline), lr.Case(CaseOnlineRebuild), lr.Case(CaseOfflineRebuild), lr.Case(CaseVerify)
	if base == nil || on == nil || off == nil || ver == nil || on.Rebuild == nil || off.Rebuild == nil || ver.Verify == nil {
		return
	}
	if off.Rebuild.EventsPerSecond > 0 {
		lr.OnlineVsOffline = on.Rebuild.EventsPerSecond / off.Rebuild.EventsPerSecond
	}
	p99 := 0.0
	if base.P99MS > 0 {
		p99 = on.P99MS / base.P99MS
	}
	add := func(t Target) { lr.Targets = append(lr.Targets, t) }
	atMost := func(name string, got, limit float64, goal bool) {
		add(Target{Name: name, Want: fmt.Sprintf("<= %.0f ms", limit), Got: fmt.Sprintf("%.1f ms", got), Met: got <= limit, Goal: goal})
	}
	add(Target{Name: "append p99, online rebuild ÷ baseline", Want: fmt.Sprintf("<= %.2fx", targetP99Ratio),
		Got: fmt.Sprintf("%.2fx (%.1f / %.1f ms)", p99, on.P99MS, base.P99MS), Met: p99 <= targetP99Ratio})
	atMost("longest append stall, online rebuild", on.MaxMS, targetStallMS, false)
	atMost("swap lock held, online rebuild", on.Rebuild.LockHeldMS, goalSwapLockMS, true)
	lag := func(name string, c *LoadCase) {
		got := fmt.Sprintf("%.1f ms", c.Tail.MaxMS)
		if c.Tail.OwnMaxMS < c.Tail.MaxMS {
			got += fmt.Sprintf(" (own %.1f)", c.Tail.OwnMaxMS)
		}
		add(Target{Name: name, Want: fmt.Sprintf("<= %.0f ms", float64(targetTailLagMS)), Got: got, Met: c.Tail.MaxMS <= targetTailLagMS})
	}
	lag("tail lag max, online rebuild", on)
	lag("tail lag max, verify", ver)
	add(Target{Name: "rebuild events/s, online ÷ offline", Want: fmt.Sprintf(">= %.2fx", targetOnlineVsOffline),
		Got: fmt.Sprintf("%.2fx", lr.OnlineVsOffline), Met: lr.OnlineVsOffline >= targetOnlineVsOffline})
	atMost("longest append stall, verify", ver.MaxMS, targetStallMS, false)
	if d == eventlog.Postgres {
		add(Target{Name: "verify: writers seen waiting on a lock", Want: "0 samples",
			Got: fmt.Sprintf("%d of %d", ver.LockWaitSamples, ver.LockSamples), Met: ver.LockWaitSamples == 0})
	} else {
		busy := on.Busy + ver.Busy
		add(Target{Name: "busy failures, online rebuild and verify", Want: "0",
			Got: fmt.Sprint(busy), Met: busy == 0})
	}
	add(Target{Name: "verify: view equal to the log", Want: "yes", Got: yesNo(ver.Verify.Equal), Met: ver.Verify.Equal})
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// writeTable writes the load section of a report's table.
func (lr *LoadResult) writeTable(w io.Writer, backend string) error {
	tw := bufio.NewWriter(w)
	rate := "as fast as they can"
	if lr.WriteRate > 0 {
		rate = fmt.Sprintf("at most %.0f/s together", lr.WriteRate)
	}
	gentle := ""
	if lr.GentleRebuild {
		gentle = ", the online rebuild gentle"
	}
	fmt.Fprintf(tw, "rebuild-load on %s: a log of %d events, %d writers appending agent events %s, tail -f polling every %.0f ms%s; times in ms\n",
		backend, lr.Events, lr.Writers, rate, lr.PollIntervalMS, gentle)
	line := func(format string, args ...any) {
		fmt.Fprintln(tw, strings.TrimRight(fmt.Sprintf(format, args...), " "))
	}
	line("%-15s %8s %8s %9s %7s %7s %8s %6s %4s %10s %8s %8s %8s %5s %8s", "CASE", "WINDOW", "APPENDS", "APPENDS/S",
		"P50", "P99", "MAX", "FAILED", "BUSY", "LOCK_WAITS", "TAIL_P99", "TAIL_MAX", "TAIL_OWN", "LOST", "OTHER_TX")
	for _, c := range lr.Cases {
		waits, other := "-", "-"
		if c.LockSamples > 0 {
			waits, other = fmt.Sprintf("%d/%d", c.LockWaitSamples, c.LockSamples), fmt.Sprintf("%.1f", c.OtherTxMS)
		}
		line("%-15s %7.1fs %8d %9.0f %7.1f %7.1f %8.1f %6d %4d %10s %8.1f %8.1f %8.1f %5d %8s", c.Name, c.WindowMS/1000, c.Appends,
			c.AppendsPerSecond, c.P50MS, c.P99MS, c.MaxMS, c.Failed, c.Busy, waits, c.Tail.P99MS, c.Tail.MaxMS, c.Tail.OwnMaxMS, c.Tail.Undelivered, other)
	}
	line("%-15s %6s %9s %9s %10s %9s %9s %14s %11s %s", "OPERATION", "ONLINE", "DURATION", "EVENTS", "EVENTS/S",
		"LOCK_HELD", "CATCH_UPS", "CATCH_UP_EVTS", "SWAP_EVENTS", "RESULT")
	for _, c := range lr.Cases {
		switch {
		case c.Rebuild != nil:
			r := c.Rebuild
			line("%-15s %6s %8.1fs %9d %10.0f %9.1f %9d %14d %11d %d rows %s", c.Name, yesNo(r.Online), r.DurationMS/1000, r.Events,
				r.EventsPerSecond, r.LockHeldMS, r.CatchUpRounds, r.CatchUpEvents, r.SwapEvents, r.Rows, r.OfflineReason)
		case c.Verify != nil:
			v := c.Verify
			result := "equal"
			if !v.Equal {
				result = "DIFFERENT"
			}
			line("%-15s %6s %8.1fs %9d %10.0f %9s %9s %14s %11s %s", c.Name, "yes", v.DurationMS/1000, v.Events,
				v.EventsPerSecond, "none", "-", "-", "-", result)
		}
	}
	line("%-42s %-10s %-26s %s", "TARGET", "WANT", "GOT", "MET")
	for _, t := range lr.Targets {
		met := "no"
		if t.Met {
			met = "yes"
		}
		if t.Goal {
			met += " (goal)"
		}
		line("%-42s %-10s %-26s %s", t.Name, t.Want, t.Got, met)
	}
	return tw.Flush()
}
