//go:build race

package soak_test

// raceEnabled reports a test binary built with -race.
const raceEnabled = true
