package probefailures

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
)

// TestParseRFC3339: the timestamps agents send parse without time.Parse,
// to its instant; other forms are left to it.
func TestParseRFC3339(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		at := time.Date(r.IntN(10000), time.Month(1+r.IntN(12)), 1+r.IntN(31), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e9), time.UTC)
		zone := time.UTC
		if r.IntN(2) == 0 {
			zone = time.FixedZone("", (r.IntN(47)-23)*3600+r.IntN(60)*60)
		}
		s := at.In(zone).Format([]string{time.RFC3339, time.RFC3339Nano, "2006-01-02T15:04:05.000000Z07:00"}[r.IntN(3)])
		if r.IntN(4) == 0 && s[len(s)-1] == 'Z' {
			// Up to 15 fractional digits: time.Parse keeps nine.
			digits := make([]byte, 1+r.IntN(15))
			for i := range digits {
				digits[i] = byte('0' + r.IntN(10))
			}
			s = s[:19] + "." + string(digits) + "Z"
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			continue // a year below 0 or above 9999 after the zone shift
		}
		got, ok := parseRFC3339([]byte(s))
		require.True(t, ok, s)
		require.True(t, got.Equal(want), "%s: %v, time.Parse says %v", s, got, want)
		require.Equal(t, eventlog.NormalizeTime(want), eventlog.NormalizeTime(got), s)
	}
	for _, s := range []string{"2026-05-16T01:00:00,5Z", "2026-05-16T01:00:00.5+24:00", "2026-05-16T01:00:00", "2026-05-16T01:00:00.Z",
		"2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-05-16T24:00:00Z", "2026-05-16t01:00:00z", "2026-05-16 01:00:00Z",
		"+2026-05-16T01:00:00Z", "2026-05-16T01:00:00+02", "2026-05-16T01:00:00+02:60", "2026-05-16T01:00:00Z "} {
		_, ok := parseRFC3339([]byte(s))
		require.False(t, ok, s)
	}
}
