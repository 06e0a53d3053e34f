package eventlogtest_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlogtest"
)

func TestFakeClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)

	t.Run("StandsStill", func(t *testing.T) {
		t.Parallel()
		c := eventlogtest.NewFakeClock(start)
		require.Equal(t, start, c.Now())
		require.Equal(t, start, c.Now(), "no step: reading does not move it")
		c.Advance(time.Minute)
		require.Equal(t, start.Add(time.Minute), c.Now())
		c.Set(start)
		require.Equal(t, start, c.Now())
	})

	t.Run("Step", func(t *testing.T) {
		t.Parallel()
		c := eventlogtest.NewFakeClock(start)
		c.SetStep(time.Second)
		require.Equal(t, start, c.Now())
		require.Equal(t, start.Add(time.Second), c.Now())
		c.Advance(time.Hour)
		require.Equal(t, start.Add(time.Hour+2*time.Second), c.Now())
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		c := eventlogtest.NewFakeClock(start)
		c.SetStep(time.Millisecond)
		const readers, reads = 8, 100
		seen := make(chan time.Time, readers*reads)
		var wg sync.WaitGroup
		for range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range reads {
					seen <- c.Now()
				}
			}()
		}
		wg.Wait()
		close(seen)
		distinct := map[time.Time]bool{}
		for ts := range seen {
			distinct[ts] = true
		}
		require.Len(t, distinct, readers*reads, "each read got its own instant")
		require.Equal(t, start.Add(readers*reads*time.Millisecond), c.Now())
	})

	t.Run("NewClock", func(t *testing.T) {
		t.Parallel()
		c := eventlogtest.NewClock()
		require.Equal(t, eventlogtest.Epoch, c.Now())
		require.Equal(t, eventlogtest.Epoch.Add(time.Millisecond), c.Now())
	})
}

func ExampleFakeClock() {
	c := eventlogtest.NewFakeClock(time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC))
	c.SetStep(time.Second) // each entry stamped by the log gets the next second
	fmt.Println(c.Now().Format(time.TimeOnly), c.Now().Format(time.TimeOnly))
	c.Advance(time.Hour)
	fmt.Println(c.Now().Format(time.TimeOnly))
	// Output:
	// 01:00:00 01:00:01
	// 02:00:02
}
