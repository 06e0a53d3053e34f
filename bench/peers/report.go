package peers

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

// Report is the outcome of a run.
type Report struct {
	// Config is the configuration the run used, defaults filled in.
	Config Config
	// Contenders are the report's columns, in order.
	Contenders []Contender
	// Scenarios are its rows, in order.
	Scenarios []Result
	// Schemas is the common prefix of the names of the run's schemas,
	// all dropped by the time Run returns.
	Schemas string
	// Server is the PostgreSQL server's version.
	Server string
	// Versions maps each module that matters to the version built in
	// (debug.ReadBuildInfo), and "go" to the Go version.
	Versions map[string]string
	// LoadBefore and LoadAfter are the machine's load averages (1, 5
	// and 15 minutes) when the run began and ended; empty where
	// /proc/loadavg does not exist.
	LoadBefore, LoadAfter string
	// RoundTrip is the median time of an empty query through the latency
	// proxy (Config.Latency); zero without one.
	RoundTrip time.Duration
	Started   time.Time
	Elapsed   time.Duration
}

// Contender is one column of a Report.
type Contender struct {
	Name string
	// Module is the Go module behind the column.
	Module string
	// Unavailable, when set, says why the contender was not measured.
	Unavailable string
}

// Result is one scenario's figures.
type Result struct {
	Name string
	// PerRound is how many events each side handled per round.
	PerRound int
	// Sides are the figures per contender, in the Report's column order.
	Sides []SideResult
}

// SideResult is one contender's figures in one scenario.
type SideResult struct {
	Name string
	// Unavailable, when set, says why there are no figures.
	Unavailable string
	// Runs are the events/s of each round, in round order.
	Runs []float64
	// Median is the median of Runs.
	Median float64
	// Ratio is canonlog's rate divided by this side's: the median of the
	// per-round ratios. 0 for canonlog itself and for unavailable sides.
	Ratio float64
	// Stored is how many events the side's store held at the end (for
	// the replay, the size of the log it read back in every round),
	// checked by SQL against what the scenario gave it.
	Stored int64
}

// Side returns the scenario's figures for the named contender.
func (r Result) Side(name string) (SideResult, bool) {
	for _, s := range r.Sides {
		if s.Name == name {
			return s, true
		}
	}
	return SideResult{}, false
}

// WriteTable writes the report as a Markdown table of events/s, one row
// per scenario and one column per contender, then the ratios of canonlog
// to each peer, what each side did, the versions and the machine's load.
func (rep *Report) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	c := rep.Config
	var peers []string
	head := []string{"scenario (events/s)"}
	for _, ct := range rep.Contenders {
		head = append(head, ct.Name)
	}
	for _, ct := range rep.Contenders {
		if ct.Name != Canonlog {
			peers = append(peers, ct.Name)
			head = append(head, "canonlog ÷ "+shortName(ct.Name))
		}
	}
	row := func(cells []string) { fmt.Fprintf(bw, "| %s |\n", strings.Join(cells, " | ")) }
	row(head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = "---"
		if i > 0 {
			sep[i] = "---:"
		}
	}
	fmt.Fprintf(bw, "|%s|\n", strings.Join(sep, "|"))
	for _, res := range rep.Scenarios {
		cells := []string{res.Name}
		for _, s := range res.Sides {
			cells = append(cells, rate(s))
		}
		for _, p := range peers {
			s, _ := res.Side(p)
			if s.Ratio == 0 {
				cells = append(cells, "n/a")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.2fx", s.Ratio))
		}
		row(cells)
	}
	fmt.Fprintf(bw, "\nMedians of %d rounds per side; the sides take turns in an order that rotates each round. "+
		"A ratio is the median of the per-round ratios.\n", c.Rounds)
	fmt.Fprintf(bw, "Per side and round: %s events from 1 client and %s from %d clients, one call per event; "+
		"%s events in calls of %d; a replay of a log of %s events.\n",
		thousands(float64(c.SingleEvents)), thousands(float64(c.ConcurrentEvents)), c.Clients,
		thousands(float64(c.BatchEvents)), c.BatchSize, thousands(float64(c.ReplayEvents)))
	if c.EventIDs {
		fmt.Fprintf(bw, "canonlog: every event with an event id (exactly-once appends; a single append is one autocommitted statement).\n")
	}
	fmt.Fprintf(bw, "raw lib/pq: canonlog's event_log table by hand; a prepared INSERT in a transaction per event, "+
		"COPY of %d rows per transaction, keyset SELECT in pages of %s.\n", c.BatchSize, thousands(eventlog.DefaultPageSize))
	for _, ct := range rep.Contenders {
		if ct.Unavailable != "" {
			fmt.Fprintf(bw, "n/a (%s): %s.\n", ct.Name, ct.Unavailable)
		}
	}
	fmt.Fprintf(bw, "\nRounds (events/s):\n")
	for _, res := range rep.Scenarios {
		var parts []string
		for _, s := range res.Sides {
			if s.Unavailable != "" {
				continue
			}
			runs := make([]string, len(s.Runs))
			for i, r := range s.Runs {
				runs[i] = thousands(r)
			}
			parts = append(parts, s.Name+" "+strings.Join(runs, " "))
		}
		fmt.Fprintf(bw, "- %s: %s\n", res.Name, strings.Join(parts, "; "))
	}
	fmt.Fprintf(bw, "\nPostgreSQL %s; %s", rep.Server, rep.Versions["go"])
	for _, ct := range rep.Contenders {
		if v, ok := rep.Versions[ct.Module]; ok {
			fmt.Fprintf(bw, "; %s %s", ct.Module, v)
		}
	}
	if v, ok := rep.Versions[watermillCore]; ok {
		fmt.Fprintf(bw, "; %s %s", watermillCore, v)
	}
	if rep.Config.Latency > 0 {
		fmt.Fprintf(bw, ".\nEvery side connected through a proxy holding each message %s in each direction: a round trip (SELECT 1) took %s",
			rep.Config.Latency, rep.RoundTrip.Round(10*time.Microsecond))
	}
	fmt.Fprintf(bw, ".\nLoad average at the start: %s; at the end: %s. Took %s.\n",
		orUnknown(rep.LoadBefore), orUnknown(rep.LoadAfter), rep.Elapsed.Round(time.Second))
	return bw.Flush()
}

// watermillCore is the module of watermill's messages, which the report
// names beside watermill-sql's.
const watermillCore = "github.com/ThreeDotsLabs/watermill"

func shortName(name string) string {
	name, _, _ = strings.Cut(name, "/")
	name, _, _ = strings.Cut(name, " ")
	return name
}

func rate(s SideResult) string {
	if s.Unavailable != "" {
		return "n/a"
	}
	return thousands(s.Median)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// thousands formats x rounded to a whole number, with commas between
// groups of three digits.
func thousands(x float64) string {
	s := fmt.Sprintf("%.0f", math.Round(x))
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, d := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// moduleVersions returns the versions of the modules built in, the
// library's as its replacement when replaced.
func moduleVersions() map[string]string {
	out := map[string]string{"go": runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return out
	}
	for _, m := range info.Deps {
		v := m.Version
		if m.Replace != nil {
			v = "replaced by " + m.Replace.Path
			if m.Replace.Version != "" && m.Replace.Version != "(devel)" {
				v += " " + m.Replace.Version
			}
		}
		out[m.Path] = v
	}
	return out
}

// loadAverage returns the first three fields of /proc/loadavg, or "".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
