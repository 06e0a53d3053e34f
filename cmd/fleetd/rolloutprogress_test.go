package main

import (
	"context"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projectiontest"
)

// TestRolloutProgress proves the upsert guarded by seq: whatever the
// interleaving of concurrent appends and rebuilds, the live view equals a
// fresh derivation from the log.
func TestRolloutProgress(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		db := dbtest.New(t, backend).Open(t)
		types := []string{"Heartbeat", "ProbeResult", "ApplyFinished"}
		statuses := []string{"ok", "fail", "pass"}
		projectiontest.RequireRebuildEquivalent(t, db, rolloutProgress{}, func(r *rand.Rand) eventlog.Entry {
			e := eventlog.Entry{
				Kind:    eventlog.KindAgentEvent,
				HostID:  fmt.Sprint("web-", r.IntN(6)),
				EventID: fmt.Sprint("e-", r.IntN(400)),
				Payload: json.RawMessage(fmt.Sprintf(`{"type":%q,"status":%q}`, types[r.IntN(3)], statuses[r.IntN(3)])),
			}
			switch r.IntN(10) {
			case 0: // no rollout: not progress
			case 1:
				e.Payload = json.RawMessage(`[1, 2]`) // not an object: counts, typeless
				e.RolloutID = "r-1"
			default:
				e.RolloutID = fmt.Sprint("r-", r.IntN(3))
			}
			return e
		}, nil)
	})
}

func TestTypeAndStatus(t *testing.T) {
	t.Parallel()
	for payload, want := range map[string][2]string{
		`{"type":"Heartbeat","status":"ok"}`: {"Heartbeat", "ok"},
		`{"type":"Heartbeat"}`:               {"Heartbeat", ""},
		`{"type":7,"status":["x"]}`:          {"", ""},
		`[1]`:                                {"", ""},
		`"text"`:                             {"", ""},
	} {
		typ, status := typeAndStatus(json.RawMessage(payload))
		require.Equal(t, want, [2]string{typ, status}, payload)
	}
}

// TestRebuildCommand: `fleetd rebuild NAME` re-derives fleetd's own
// projection, which the canonlog command does not know, on the database
// a running fleetd serves from.
func TestRebuildCommand(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		f := setup(t, backend, noConfig)
		c := newClient(t, f.handler)
		for _, body := range []string{
			probeBody("web-1", "r-1", "a", "C1"),
			`{"host_id":"web-1","rollout_id":"r-1","event_id":"b","payload":{"type":"Heartbeat","status":"ok"}}`,
			`{"host_id":"web-2","rollout_id":"r-1","event_id":"c","payload":{"type":"ApplyFinished","status":"ok"}}`,
		} {
			require.Equal(t, 201, c.do("POST", "/v1/agent-events", body, nil))
		}
		var want hostsResponse
		require.Equal(t, 200, c.do("GET", "/v1/rollouts/r-1/hosts", "", &want))
		_, err := f.db.ExecContext(ctx, `UPDATE rollout_progress SET last_status = 'tampered'`)
		require.NoError(t, err)

		url := dbURL(t, f)
		stdout, stderr, code := runFleetd(ctx, nil, "--database-url", url, "verify", "rollout_progress")
		require.Equal(t, 3, code, "verify finds the tampered view: %s%s", stdout, stderr)
		require.Contains(t, stdout, "rollout_progress")

		stdout, stderr, code = runFleetd(ctx, nil, "--database-url", url, "rebuild", "rollout_progress")
		require.Equal(t, exitOK, code, stderr)
		require.Contains(t, stdout, "rebuilt rollout_progress")
		require.Contains(t, stdout, "3 events replayed")
		require.NotContains(t, stdout, "probe_failures", "only the named projection is rebuilt")

		var got hostsResponse
		require.Equal(t, 200, c.do("GET", "/v1/rollouts/r-1/hosts", "", &got))
		require.Equal(t, want, got)
		_, stderr, code = runFleetd(ctx, nil, "--database-url", url, "verify")
		require.Equal(t, exitOK, code, stderr)

		_, stderr, code = runFleetd(ctx, nil, "--database-url", url, "rebuild", "host_status")
		require.Equal(t, exitUsage, code, stderr)
		require.Contains(t, stderr, `"host_status"`)
		require.Contains(t, stderr, "rollout_progress", "the error names the projections fleetd knows")
	})
}

// rollout_progress shows how an application writes a projection, and an
// application outside this module cannot import canonlog's internal
// packages: the projection's file must not either.
func TestRolloutProgressImportsNoInternalPackage(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "rolloutprogress.go", nil, parser.ImportsOnly)
	require.NoError(t, err)
	require.NotEmpty(t, f.Imports)
	for _, imp := range f.Imports {
		path, err := strconv.Unquote(imp.Path.Value)
		require.NoError(t, err)
		require.False(t, strings.Contains(path, "/internal/") || strings.HasSuffix(path, "/internal"),
			"rolloutprogress.go imports %s: an application outside this module could not", path)
	}
}
