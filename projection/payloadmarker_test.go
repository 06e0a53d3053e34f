package projection_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

func newMarkedView(markers ...string) *markedView {
	return &markedView{kindView: kindView{testView{kinds: []eventlog.Kind{eventlog.KindAgentEvent}, failOn: "poison"}}, markers: markers}
}

// A projection with payload markers is rebuilt, verified and installed
// from the events of its kinds that hold a marker, and from no other: on
// both backends, online and offline.
func TestPayloadMarkers(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		view := newMarkedView(`"fail"`, "ünï")
		log, reg, db := setup(t, backend, view)
		var marked int64
		for i, p := range []string{
			`{"status":"fail"}`, `{"status":"pass"}`, `{"status":"FAIL"}`, `{"s":"ünïcode"}`,
			`{"status":"f\u0061il"}`, `{"status": "fail", "n": 5}`, `{"note":"poison","status":"pass"}`,
		} {
			for _, kind := range []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect} {
				_, err := log.Append(ctx, ev(kind, "h1", p))
				require.NoError(t, err, "payload %d", i)
				if kind == eventlog.KindAgentEvent && (strings.Contains(p, `"fail"`) || strings.Contains(p, "ünï")) {
					marked++
				}
			}
		}
		require.Equal(t, int64(3), marked)
		require.Equal(t, int(marked), count(t, db, "test_view"))

		for _, offline := range []bool{false, true} {
			view.applied.Store(0)
			var last projection.Progress
			res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Offline: offline, Progress: func(p projection.Progress) { last = p }})
			require.NoError(t, err)
			require.Equal(t, !offline, res[0].Online)
			require.Equal(t, marked, res[0].Events, "the events replayed are those holding a marker")
			require.Equal(t, marked, view.applied.Load(), "and Apply saw no other; the poisoned one without a marker among them")
			require.Equal(t, marked, res[0].Rows)
			require.Equal(t, projection.Progress{Projection: view.Name(), Phase: last.Phase, Round: last.Round, Done: marked, Total: marked}, last)
		}

		view.applied.Store(0)
		vr, err := projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		require.True(t, vr[0].Equal, "%+v", vr[0])
		require.Equal(t, marked, view.applied.Load(), "verify derives from the marked events only")

		// Installed on a log whose events of its kinds hold no marker, a
		// projection starts built; on one that holds a marked event, it
		// starts stale.
		for _, c := range []struct {
			markers []string
			stale   bool
		}{{[]string{"absent"}, false}, {[]string{"absent", "ünï"}, true}} {
			other := newMarkedView(c.markers...)
			other.version = 2
			reg2, err := projection.NewRegistry(other)
			require.NoError(t, err)
			_, err = db.Exec(`DELETE FROM canonlog_projections`)
			require.NoError(t, err)
			require.NoError(t, projection.Install(ctx, log, reg2))
			sts, err := projection.ReadStatus(ctx, log, reg2)
			require.NoError(t, err)
			require.Equal(t, c.stale, sts[0].Stale, "markers %q", c.markers)
		}
	})
}

// A projection that breaks its promise (derives rows from an event
// without a marker) is found out by Verify: the appends applied every
// event, the fresh derivation only the marked ones.
func TestPayloadMarkersBrokenPromise(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		view := newMarkedView(`"fail"`)
		view.lies = true
		log, reg, _ := setup(t, backend, view)
		for _, p := range []string{`{"status":"fail"}`, `{"status":"pass"}`} {
			_, err := log.Append(ctx, ev(eventlog.KindAgentEvent, "h1", p))
			require.NoError(t, err)
		}
		vr, err := projection.Verify(ctx, log, reg, nil)
		require.NoError(t, err)
		require.False(t, vr[0].Equal)
		require.Equal(t, int64(1), vr[0].Extra, "the row of the unmarked event")
	})
}

// Register refuses markers that no read could use, and changes nothing.
func TestPayloadMarkersRegister(t *testing.T) {
	t.Parallel()
	reg, err := projection.NewRegistry()
	require.NoError(t, err)
	for _, c := range []struct {
		markers []string
		want    string
	}{
		{nil, "PayloadMarkers() is empty"},
		{[]string{}, "PayloadMarkers() is empty"},
		{[]string{"ok", ""}, "PayloadContains[1]"},
		{[]string{"a\x00"}, "contains a NUL byte"},
		{[]string{"\xff"}, "not valid UTF-8"},
		{[]string{strings.Repeat("m", eventlog.MaxPayloadMarkerBytes+1)}, "bytes, at most"},
		{strings.Fields(strings.Repeat("m ", eventlog.MaxPayloadMarkers+1)), "strings, at most"},
	} {
		err := reg.Register(newMarkedView(c.markers...))
		require.ErrorIs(t, err, projection.ErrInvalidProjection, "%q", c.markers)
		require.ErrorContains(t, err, c.want)
	}
	require.Empty(t, reg.Names(), "refused registrations change nothing")

	// The registry keeps its own copy of the markers.
	v := newMarkedView("a", "b")
	require.NoError(t, reg.Register(v))
	v.markers[0] = ""
	require.Equal(t, []string{"test_view"}, reg.Names())
}
