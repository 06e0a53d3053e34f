package canonlogcli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/canonlog/canonlog/projection"
)

// Progress styles.
const (
	progressAuto  = "auto"  // bar on a terminal, lines otherwise
	progressBar   = "bar"   // redrawn in place
	progressLines = "lines" // a plain line every few seconds, for logs
	progressNone  = "none"
)

// progressLineEvery spaces the plain progress lines.
const progressLineEvery = 2 * time.Second

// progressReporter shows a rebuild's progress on stderr: the replay of an
// offline rebuild, or the phases of an online one (the build, each
// catch-up round, the swap).
type progressReporter struct {
	w     io.Writer
	style string
	now   func() time.Time

	name      string
	start     time.Time
	lastDraw  time.Time
	drawn     bool
	lastShown projection.Progress
	// phase and round are those of the last update drawn; built is the
	// events done when the catch-up began.
	phase projection.Phase
	round int
	built int64
}

func newProgressReporter(w io.Writer, style string) *progressReporter {
	if style == progressAuto {
		style = progressLines
		if f, ok := w.(*os.File); ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())) {
			style = progressBar
		}
	}
	return &progressReporter{w: w, style: style, now: time.Now}
}

// update is the projection.RebuildOptions.Progress callback.
func (r *progressReporter) update(p projection.Progress) {
	if r.style == progressNone {
		return
	}
	now := r.now()
	if p.Projection != r.name {
		r.finish()
		r.name, r.start, r.drawn = p.Projection, now, false
		r.lastDraw, r.phase, r.round, r.built = time.Time{}, "", 0, 0
	}
	if p.Phase == projection.PhaseCatchUp && r.phase != projection.PhaseCatchUp {
		r.built = p.Done
	}
	// A phase, or a catch-up round, is always shown as it begins.
	step := !r.drawn || p.Phase != r.phase || p.Round != r.round
	if step && r.drawn && p.Phase != r.phase {
		r.finish() // the bar of the phase before stays on its line
	}
	final := counted(p) && p.Total > 0 && p.Done >= p.Total
	switch r.style {
	case progressBar:
		if !step && !final && now.Sub(r.lastDraw) < 100*time.Millisecond {
			r.lastShown = p
			return
		}
		fmt.Fprintf(r.w, "\r%s\x1b[K", r.bar(p, now))
	default:
		// The first and the last line always, the rest spaced out.
		if !step && !final && now.Sub(r.lastDraw) < progressLineEvery {
			r.lastShown = p
			return
		}
		if !step && final && r.lastShown == p {
			return
		}
		fmt.Fprintln(r.w, r.line(p, now))
	}
	r.drawn, r.lastDraw, r.lastShown, r.phase, r.round = true, now, p, p.Phase, p.Round
}

// counted reports a phase that replays a known number of events: an
// offline rebuild's replay, an online rebuild's build.
func counted(p projection.Progress) bool {
	return p.Phase != projection.PhaseCatchUp && p.Phase != projection.PhaseSwap
}

// stage describes the catch-up and the swap, which have no known total.
func (r *progressReporter) stage(p projection.Progress) string {
	if p.Phase == projection.PhaseCatchUp {
		return fmt.Sprintf("catch-up round %d: %s since the build", p.Round, plural(p.Done-r.built, "event", "events"))
	}
	return fmt.Sprintf("swap after %s: the last events, under the projection's lock", plural(p.Round, "catch-up round", "catch-up rounds"))
}

// finish ends the current projection's display.
func (r *progressReporter) finish() {
	if r.style == progressBar && r.drawn {
		fmt.Fprintln(r.w)
	}
	r.drawn = false
}

func (r *progressReporter) rate(p projection.Progress, now time.Time) (perSec float64, eta string) {
	elapsed := now.Sub(r.start).Seconds()
	if elapsed <= 0 || p.Done == 0 {
		return 0, "?"
	}
	perSec = float64(p.Done) / elapsed
	left := time.Duration(float64(p.Total-p.Done) / perSec * float64(time.Second))
	return perSec, left.Round(time.Second).String()
}

func (r *progressReporter) line(p projection.Progress, now time.Time) string {
	if !counted(p) {
		return fmt.Sprintf("rebuild %s: %s", p.Projection, r.stage(p))
	}
	perSec, eta := r.rate(p, now)
	return fmt.Sprintf("rebuild %s: %s %d/%s (%s), %s events/s, ETA %s", p.Projection, p.Phase, p.Done, plural(p.Total, "event", "events"), percent(p), formatRate(perSec), eta)
}

func (r *progressReporter) bar(p projection.Progress, now time.Time) string {
	if !counted(p) {
		return fmt.Sprintf("%s %s", p.Projection, r.stage(p))
	}
	const width = 30
	filled := width
	if p.Total > 0 {
		filled = int(int64(width) * p.Done / p.Total)
	}
	perSec, eta := r.rate(p, now)
	return fmt.Sprintf("%s %s [%s%s] %s %d/%s %s/s ETA %s", p.Projection, p.Phase,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), percent(p), p.Done, plural(p.Total, "event", "events"), formatRate(perSec), eta)
}

func percent(p projection.Progress) string {
	if p.Total == 0 {
		return "100%"
	}
	return fmt.Sprintf("%d%%", 100*p.Done/p.Total)
}

func formatRate(perSec float64) string {
	return fmt.Sprintf("%.0f", perSec)
}
