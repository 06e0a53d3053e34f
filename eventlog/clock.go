package eventlog

import "time"

// Clock supplies the timestamp of an entry appended with a zero TS. canonlog
// never lets the database choose a timestamp: time is an input, injected
// here, so tests and replays are deterministic (eventlogtest.FakeClock is
// one for tests).
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
