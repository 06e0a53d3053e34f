package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/fleetgen"
	"github.com/canonlog/canonlog/probefailures"
)

// TestRebuildLoad runs rebuild-load on a small log and checks that the
// report is complete and sane. No timing is asserted: the targets are
// reported, met or not.
func TestRebuildLoad(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		b := dbtest.New(t, backend)
		// Writers that do not saturate the database: on SQLite, whose
		// busy handler polls, saturating writers starve the rebuild's
		// write transactions for seconds (docs/performance.md), which
		// would only make the test slow.
		const writers = 2
		var progress bytes.Buffer
		// A baseline of a second: with two copies of the suite side by
		// side, a 300 ms window once counted no append at all (the
		// writers' first appends, which open their connections, are the
		// likely cause; not pinned down).
		// The online rebuild is gentle on PostgreSQL, where that changes
		// how it reads, and the default on SQLite.
		gentle := backend == "postgres"
		rep, err := setup(t, b, Config{Events: 300, Writers: writers, WriteRate: 300, LoadBaseline: time.Second,
			GentleRebuild: gentle, Scenarios: []string{ScenarioRebuildLoad}, Progress: &progress}).Run(context.Background())
		require.NoError(t, err)
		require.Empty(t, rep.Scenarios)
		lr := rep.Load
		require.NotNil(t, lr)
		require.Equal(t, 300, lr.Events)
		require.Equal(t, writers, lr.Writers)
		require.Equal(t, 300.0, lr.WriteRate)
		require.Equal(t, gentle, lr.GentleRebuild)
		require.Equal(t, ms(eventlog.DefaultPollInterval), lr.PollIntervalMS)

		var names []string
		for _, c := range lr.Cases {
			names = append(names, c.Name)
			require.Positive(t, c.WindowMS, c.Name)
			require.Positive(t, c.Measured, c.Name)
			require.GreaterOrEqual(t, c.Measured, c.Appends, c.Name)
			require.Zero(t, c.Failed, c.Name)
			require.Zero(t, c.Busy, c.Name)
			require.Zero(t, c.Tail.Undelivered, c.Name)
			require.Positive(t, c.Tail.Events, c.Name)
			require.LessOrEqual(t, c.P50MS, c.P99MS, c.Name)
			require.LessOrEqual(t, c.P99MS, c.MaxMS, c.Name)
			require.LessOrEqual(t, c.Tail.P50MS, c.Tail.P99MS, c.Name)
			require.LessOrEqual(t, c.Tail.P99MS, c.Tail.MaxMS, c.Name)
			require.LessOrEqual(t, c.Tail.OwnP99MS, c.Tail.P99MS, c.Name)
			require.LessOrEqual(t, c.Tail.OwnMaxMS, c.Tail.MaxMS, c.Name)
			if backend != "postgres" {
				require.Equal(t, c.Tail.MaxMS, c.Tail.OwnMaxMS, c.Name)
			}
			if backend != "postgres" {
				require.Zero(t, c.LockSamples, c.Name)
			}
		}
		require.Equal(t, []string{CaseBaseline, CaseOnlineRebuild, CaseOfflineRebuild, CaseVerify}, names)
		require.Positive(t, lr.Case(CaseBaseline).Appends, "the writers ran")
		if backend == "postgres" {
			require.Positive(t, lr.Case(CaseBaseline).LockSamples, "the sampler ran")
		}

		on, off := lr.Case(CaseOnlineRebuild).Rebuild, lr.Case(CaseOfflineRebuild).Rebuild
		require.NotNil(t, on)
		require.True(t, on.Online, on.OfflineReason)
		require.Positive(t, on.CatchUpRounds)
		require.NotNil(t, off)
		require.False(t, off.Online)
		// A rebuild reads the events probe_failures can derive from: the
		// agent events holding one of its payload markers.
		m, err := newMix(fleetgen.Realistic)
		require.NoError(t, err)
		var marked int64
		for i := int64(1); i <= 300; i++ {
			e := m.all.Entry(i)
			if e.Kind == eventlog.KindAgentEvent && slices.ContainsFunc(probefailures.New().PayloadMarkers(), func(mk string) bool { return bytes.Contains(e.Payload, []byte(mk)) }) {
				marked++
			}
		}
		require.Positive(t, marked)
		for _, r := range []*RebuildFigures{on, off} {
			require.GreaterOrEqual(t, r.Events, marked, "the fill's events that probe_failures reads, at least")
			require.Positive(t, r.EventsPerSecond)
			require.Positive(t, r.DurationMS)
			require.Positive(t, r.LockHeldMS)
			require.Positive(t, r.Rows)
		}
		// The log only grows; whether the writers' events between the
		// two rebuilds hold a marker is chance.
		require.GreaterOrEqual(t, off.Events, on.Events)
		require.Positive(t, lr.Case(CaseOnlineRebuild).Appends, "the writers appended during the online rebuild")
		v := lr.Case(CaseVerify).Verify
		require.NotNil(t, v)
		require.True(t, v.Equal, "the view after two rebuilds under load")
		require.GreaterOrEqual(t, v.Events, off.Events)
		require.InDelta(t, on.EventsPerSecond/off.EventsPerSecond, lr.OnlineVsOffline, 1e-9)

		require.NotEmpty(t, lr.Targets)
		for _, tg := range lr.Targets {
			require.NotEmpty(t, tg.Want, tg.Name)
			require.NotEmpty(t, tg.Got, tg.Name)
		}
		require.Contains(t, progress.String(), "bench: rebuild-load: filled 300 events in ")
		require.Contains(t, progress.String(), "bench: rebuild-load done")

		// The table and the JSON carry it all.
		var buf bytes.Buffer
		require.NoError(t, rep.WriteTable(&buf))
		out := buf.String()
		t.Log("\n" + progress.String() + out)
		require.True(t, strings.HasPrefix(out, fmt.Sprintf("rebuild-load on %s: a log of 300 events, %d writers appending agent events at most 300/s", backend, writers)), out)
		require.Equal(t, gentle, strings.Contains(strings.SplitN(out, "\n", 2)[0], ", the online rebuild gentle;"), out)
		for _, s := range append(names, "OPERATION", "TARGET", "equal") {
			require.Contains(t, out, s)
		}
		data, err := json.Marshal(rep)
		require.NoError(t, err)
		var back Report
		require.NoError(t, json.Unmarshal(data, &back))
		require.Equal(t, rep.Load, back.Load)
	})
}

// A follower's lag counts, for the run's own share, from the last sample
// that saw another client's transaction begun before the append returned.
func TestHeldUntil(t *testing.T) {
	t.Parallel()
	s := func(t, foreign time.Duration) lockSample {
		return lockSample{t: t * time.Millisecond, foreign: foreign * time.Millisecond}
	}
	l := &loadRun{samples: []lockSample{
		s(100, 0), s(120, 50), s(140, 70), s(160, 10), s(180, 0), s(200, 20), s(220, 0),
	}}
	ms := func(d time.Duration) time.Duration { return d * time.Millisecond }
	require.Equal(t, ms(140), l.heldUntil(ms(110), ms(1000)), "begun at 70, seen until 140; those seen at 160 and 200 began later")
	require.Equal(t, ms(200), l.heldUntil(ms(190), ms(1000)), "begun at 180")
	require.Equal(t, ms(120), l.heldUntil(ms(110), ms(130)), "not after the delivery")
	require.Zero(t, l.heldUntil(ms(205), ms(1000)), "none after")
	require.Zero(t, l.heldUntil(ms(60), ms(1000)), "every one began after the append returned")
}
