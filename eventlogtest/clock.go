package eventlogtest

import (
	"sync"
	"time"

	"github.com/canonlog/canonlog/eventlog"
)

var _ eventlog.Clock = (*FakeClock)(nil)

// FakeClock is an eventlog.Clock for tests: it returns a set time and
// moves only when told to. It is safe for concurrent use.
type FakeClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

// NewFakeClock returns a FakeClock reading start. NewClock returns one at
// Epoch that steps a millisecond per read.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start}
}

// Now returns the clock's time, then advances it by the step set with
// SetStep (zero by default).
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now
	c.now = c.now.Add(c.step)
	return now
}

// Set moves the clock to t.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// SetStep makes every later call to Now advance the clock by d, so that
// successive entries get distinct timestamps.
func (c *FakeClock) SetStep(d time.Duration) {
	c.mu.Lock()
	c.step = d
	c.mu.Unlock()
}
