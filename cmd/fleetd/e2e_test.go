package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	buildOut  []byte
)

// binaries builds the fleetd and the stock canonlog commands once per test
// run and returns their paths.
func binaries(t *testing.T) (fleetd, canonlog string) {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "fleetd-e2e-"); buildErr != nil {
			return
		}
		for _, b := range []struct{ out, pkg string }{{"fleetd", "."}, {"canonlog", "../canonlog"}} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			if buildOut, buildErr = cmd.CombinedOutput(); buildErr != nil {
				return
			}
		}
	})
	require.NoError(t, buildErr, "go build: %s", buildOut)
	return filepath.Join(binDir, "fleetd"), filepath.Join(binDir, "canonlog")
}

// removeBinaries removes what binaries built (TestMain calls it).
func removeBinaries() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// shell runs one built binary as an operator would: the database URL in
// the environment, in a directory of its own.
type shell struct {
	t   *testing.T
	bin string
	dir string
	env []string
}

func newShell(t *testing.T, bin, dir, databaseURL string) *shell {
	t.Helper()
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CANONLOG_") && !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "FLEETD_") {
			env = append(env, kv)
		}
	}
	if databaseURL != "" {
		env = append(env, "CANONLOG_DATABASE_URL="+databaseURL)
	}
	return &shell{t: t, bin: bin, dir: dir, env: env}
}

type cmdResult struct {
	out, err string
	code     int
}

func (s *shell) run(args ...string) cmdResult {
	s.t.Helper()
	cmd := exec.Command(s.bin, args...)
	cmd.Dir, cmd.Env = s.dir, s.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(s.t, err)
	}
	return cmdResult{out.String(), errOut.String(), code}
}

func (s *shell) ok(args ...string) string {
	s.t.Helper()
	r := s.run(args...)
	require.Equal(s.t, 0, r.code, "%s %v: %s%s", filepath.Base(s.bin), args, r.out, r.err)
	return r.out
}

// projectionState is a projection as status -o json reports it.
type projectionState struct {
	Name       string `json:"name"`
	Registered bool   `json:"registered"`
	Stale      bool   `json:"stale"`
}

// status returns the projections status reports, by name.
func (s *shell) status() map[string]projectionState {
	s.t.Helper()
	var rep struct {
		Projections []projectionState `json:"projections"`
	}
	out := s.ok("status", "-o", "json")
	require.NoError(s.t, json.Unmarshal([]byte(out), &rep), out)
	byName := map[string]projectionState{}
	for _, p := range rep.Projections {
		byName[p.Name] = p
	}
	return byName
}

// heartbeat is an agent event, which rollout_progress records as its
// host's last event in the rollout (and probe_failures ignores).
func heartbeat(host, eventID string) []string {
	return []string{"append", "--kind", "agent_event", "--host", host, "--rollout", "r-1", "--event-id", eventID,
		"--payload", `{"type":"Heartbeat","status":"ok"}`}
}

// progressRows reads rollout_progress as host → last type.
func progressRows(t *testing.T, db *sqlx.DB) map[string]string {
	t.Helper()
	var rows []struct {
		Host string `db:"host_id"`
		Type string `db:"last_type"`
	}
	require.NoError(t, db.Select(&rows, `SELECT host_id, last_type FROM rollout_progress ORDER BY host_id`))
	out := map[string]string{}
	for _, r := range rows {
		out[r.Host] = r.Type
	}
	return out
}

func countEvents(t *testing.T, db *sqlx.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM event_log`))
	return n
}

// TestEndToEnd drives the built fleetd binary through an operator's
// session on each backend, then the stock canonlog binary on the same
// database: canonlog reads it, refuses to append what fleetd's own
// projection consumes, and with --allow-drift appends it and leaves
// rollout_progress stale until fleetd rebuilds it.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	fleetdBin, canonlogBin := binaries(t)
	dbtest.Run(t, func(t *testing.T, backend string) {
		b := dbtest.New(t, backend)
		db := b.Open(t)
		fleetd := newShell(t, fleetdBin, t.TempDir(), b.URL)
		canonlog := newShell(t, canonlogBin, t.TempDir(), b.URL)

		require.Contains(t, fleetd.ok("migrate", "up"), "migrations applied")
		fleetd.ok(heartbeat("web-1", "web-1/1")...)
		require.Equal(t, map[string]string{"web-1": "Heartbeat"}, progressRows(t, db), "fleetd's append applied rollout_progress")

		st := fleetd.status()
		for _, name := range []string{"rollout_progress", "probe_failures"} {
			require.Contains(t, st, name)
			require.True(t, st[name].Registered, name)
			require.False(t, st[name].Stale, name)
		}
		require.Contains(t, fleetd.ok("rebuild", "rollout_progress"), "rollout_progress")
		require.Equal(t, map[string]string{"web-1": "Heartbeat"}, progressRows(t, db))
		require.Equal(t, 0, fleetd.run("verify").code)

		// The stock binary reads the service's database.
		require.Len(t, strings.Split(strings.TrimSpace(canonlog.ok("query", "-o", "ndjson")), "\n"), 1)
		st = canonlog.status()
		require.Contains(t, st, "rollout_progress")
		require.False(t, st["rollout_progress"].Registered, "canonlog does not register fleetd's projection")
		require.True(t, st["probe_failures"].Registered)
		require.Contains(t, canonlog.ok("status"), "rollout_progress")

		// It refuses to append what rollout_progress consumes, and writes
		// nothing.
		before := countEvents(t, db)
		r := canonlog.run(heartbeat("web-2", "web-2/1")...)
		require.NotEqual(t, 0, r.code, r.out)
		require.Contains(t, r.err, "rollout_progress")
		require.Contains(t, r.err, "register") // registers, registered: the wording may change
		require.Equal(t, before, countEvents(t, db), "a refused append writes nothing")
		require.Equal(t, map[string]string{"web-1": "Heartbeat"}, progressRows(t, db))
		require.False(t, fleetd.status()["rollout_progress"].Stale)

		// With --allow-drift it appends, and rollout_progress is stale
		// until fleetd rebuilds it.
		canonlog.ok(append(heartbeat("web-2", "web-2/1"), "--allow-drift")...)
		require.Equal(t, before+1, countEvents(t, db))
		require.Equal(t, map[string]string{"web-1": "Heartbeat"}, progressRows(t, db), "canonlog cannot apply rollout_progress")
		st = fleetd.status()
		require.True(t, st["rollout_progress"].Stale)
		require.False(t, st["probe_failures"].Stale, "canonlog applied probe_failures")
		require.NotEqual(t, 0, fleetd.run("verify", "rollout_progress").code, "the view misses web-2's event")

		require.Contains(t, fleetd.ok("rebuild", "--stale"), "rollout_progress")
		require.Equal(t, map[string]string{"web-1": "Heartbeat", "web-2": "Heartbeat"}, progressRows(t, db))
		require.False(t, fleetd.status()["rollout_progress"].Stale)
		require.Equal(t, 0, fleetd.run("verify").code)
	})
}

// TestEndToEndDefaultDatabase: with no database URL anywhere, every fleetd
// command opens fleetd's own default, sqlite:fleetd.db, which serve opens
// too, never canonlog's.
func TestEndToEndDefaultDatabase(t *testing.T) {
	t.Parallel()
	fleetdBin, _ := binaries(t)
	dir := t.TempDir()
	fleetd := newShell(t, fleetdBin, dir, "")

	r := fleetd.run("status")
	require.NotEqual(t, 0, r.code)
	require.Contains(t, r.err, "fleetd.db")
	require.Contains(t, r.err, "fleetd migrate up")

	fleetd.ok("migrate", "up")
	require.FileExists(t, filepath.Join(dir, "fleetd.db"))
	require.NoFileExists(t, filepath.Join(dir, "canonlog.db"))
	require.Contains(t, fleetd.ok("status"), "rollout_progress")
}
