package canonlogcli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

// binary builds the canonlog command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "canonlog-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "canonlog")
		cmd := exec.Command("go", "build", "-o", binPath, "..")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	require.NoError(t, buildErr, "go build: %s", buildOut)
	return binPath
}

func TestMain(m *testing.M) {
	// Chunks of 100 entries: the tests that append more than a chunk, or
	// two, then write hundreds of lines rather than tens of thousands
	// (the SQLite ones took 28 s of the package's time under -race).
	// Set before any test runs, so no test sees it change.
	chunkEntries = 100
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// user runs the built binary as a shell user would: the database URL in
// the environment, in a directory of its own.
type user struct {
	t   *testing.T
	bin string
	dir string
	env []string
}

func newUser(t *testing.T, databaseURL string) *user {
	t.Helper()
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CANONLOG_DATABASE_URL=") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	if databaseURL != "" {
		env = append(env, "CANONLOG_DATABASE_URL="+databaseURL)
	}
	return &user{t: t, bin: binary(t), dir: t.TempDir(), env: env}
}

func (u *user) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(u.bin, args...)
	cmd.Dir, cmd.Env = u.dir, u.env
	return cmd
}

// run runs the binary and returns its output and exit code.
func (u *user) run(stdin string, args ...string) result {
	u.t.Helper()
	cmd := u.cmd(args...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(u.t, err)
	}
	return result{out.String(), errOut.String(), code}
}

func (u *user) ok(stdin string, args ...string) string {
	u.t.Helper()
	r := u.run(stdin, args...)
	require.Equal(u.t, 0, r.code, "canonlog %v: %s", args, r.err)
	return r.out
}

// pipe runs "canonlog a… | canonlog b…" and returns b's result.
func (u *user) pipe(a, b []string) result {
	u.t.Helper()
	producer, consumer := u.cmd(a...), u.cmd(b...)
	r, w, err := os.Pipe()
	require.NoError(u.t, err)
	var out, errOut, prodErr bytes.Buffer
	producer.Stdout, producer.Stderr = w, &prodErr
	consumer.Stdin, consumer.Stdout, consumer.Stderr = r, &out, &errOut
	require.NoError(u.t, producer.Start())
	require.NoError(u.t, consumer.Start())
	w.Close()
	r.Close()
	err = consumer.Wait()
	perr := producer.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(u.t, err)
	}
	// A consumer that fails stops reading, and the producer then dies of
	// a broken pipe: only a working consumer makes the producer's failure
	// the news.
	if code == 0 {
		require.NoError(u.t, perr, prodErr.String())
	}
	return result{out.String(), errOut.String(), code}
}

// TestEndToEnd drives the built binary through a user's session on each
// backend: migrate, gen | append, query, tail, rebuild, verify, tamper,
// verify again, status, and bad input that must change nothing.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		u := newUser(t, c.url)

		require.Contains(t, u.ok("", "migrate", "up"), "migrations applied")
		r := u.pipe([]string{"gen", "--events", "3000", "--hosts", "40", "--fail-ratio", "0.3", "--seed", "9"}, []string{"append", "--file", "-"})
		require.Equal(t, 0, r.code, r.err)
		require.Contains(t, r.out, "appended 3000 new events (seqs 1-3000), 0 duplicates")
		events, rows := c.counts()
		require.Equal(t, 3000, events)
		require.Positive(t, rows)

		// Appending the same history again lands nothing.
		r = u.pipe([]string{"gen", "--events", "3000", "--hosts", "40", "--fail-ratio", "0.3", "--seed", "9"}, []string{"append", "--file", "-"})
		require.Equal(t, 0, r.code, r.err)
		require.Contains(t, r.out, "appended 0 new events (seqs none), 3000 duplicates")

		require.Len(t, ndjsonSeqs(t, u.ok("", "query", "--host", "host-00007", "--limit", "5", "-o", "ndjson")), 5)
		require.Len(t, ndjsonSeqs(t, u.ok("", "tail", "-n", "4", "--kind", "agent_event", "-o", "ndjson")), 4)

		r = u.run("", "rebuild", "--all")
		require.Equal(t, 0, r.code, r.err)
		require.Contains(t, r.out, "rebuilt probe_failures (version 1)")
		require.Contains(t, r.err, "rebuild probe_failures: ", "plain progress lines: stderr is not a terminal")
		require.NotContains(t, r.err, "\r")

		require.Equal(t, 0, u.run("", "verify").code)
		tamper(t, c)
		r = u.run("", "verify")
		require.Equal(t, 3, r.code, r.err)
		require.Contains(t, r.out, "TAMPERED")
		u.ok("", "rebuild", "probe_failures")
		require.Equal(t, 0, u.run("", "verify").code)
		r = u.run("", "rebuild", "probe_failures", "--offline")
		require.Equal(t, 0, r.code, r.err)
		require.Contains(t, r.out, "rebuilt probe_failures (version 1) offline: ")
		require.Contains(t, r.err, "rebuild probe_failures: replay 0/")
		out := u.ok("", "status")
		require.NotContains(t, out, "rebuilding online")
		require.NotContains(t, out, "leftover from a stopped rebuild")

		status := u.ok("", "status")
		require.Contains(t, status, "events:   3000 (last seq 3000)")
		require.Contains(t, status, "probe_failures")

		// Bad input: non-zero, a clear one-line message, nothing changed.
		events, rows = c.counts()
		for _, tc := range []struct {
			stdin string
			args  []string
			want  string
		}{
			{"", []string{"append", "--kind", "agent_event", "--payload", `{"broken":`}, "--payload: invalid payload"},
			{"", []string{"append", "--kind", "Agent-Event", "--payload", `{}`}, "--kind: invalid kind"},
			{`{"kind":"effect","payload":{}}` + "\n" + `{"kind":"effect","payload":{} ` + "\n", []string{"append", "--file", "-"}, "line 2:"},
			{"", []string{"rebuild", "no_such_view"}, "known projections are probe_failures"},
			{"", []string{"verify", "no_such_view"}, "known projections are probe_failures"},
			{"", []string{"--database-url", "postgres://x:%zz@host/db", "status"}, "malformed"},
			{"", []string{"--database-url", "mysql://host/db", "append", "--kind", "effect", "--payload", "{}"}, "unknown scheme"},
		} {
			r := u.run(tc.stdin, tc.args...)
			require.NotEqual(t, 0, r.code, "%v", tc.args)
			require.Contains(t, r.err, tc.want, "%v", tc.args)
			require.Equal(t, 1, strings.Count(withoutHint(r.err), "\n"), "%v: %q", tc.args, r.err)
			e2, r2 := c.counts()
			require.Equal(t, events, e2, "%v", tc.args)
			require.Equal(t, rows, r2, "%v", tc.args)
		}
	})
}

// TestEndToEndDemoTwice: the README's first command, twice, in a fresh
// directory with no database URL anywhere.
func TestEndToEndDemoTwice(t *testing.T) {
	t.Parallel()
	u := newUser(t, "")
	out := u.ok("", "demo")
	require.Contains(t, out, "database: sqlite:canonlog.db")
	require.Contains(t, out, "appended 369 new events (0 already present)")
	require.FileExists(t, filepath.Join(u.dir, "canonlog.db"))
	out = u.ok("", "demo")
	require.Contains(t, out, "appended 0 new events (369 already present)")
	require.Contains(t, out, "verified probe_failures")
	require.Contains(t, out, "Try next:\n  canonlog status\n", "the default database goes without --database-url")
}

// hints returns the command lines of the demo's "Try next" section.
func hints(t *testing.T, demoOut string) []string {
	t.Helper()
	_, section, ok := strings.Cut(demoOut, "Try next:\n")
	require.True(t, ok, demoOut)
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(section, "\n"), "\n") {
		cmd, _, _ := strings.Cut(strings.TrimSpace(l), "   ") // the comment after tail -f
		lines = append(lines, cmd)
	}
	require.Len(t, lines, 5)
	return lines
}

// TestEndToEndDemoHintsRunAsCopied: the demo's "Try next" commands,
// pasted into a shell in another directory, work on the database the
// demo used.
func TestEndToEndDemoHintsRunAsCopied(t *testing.T) {
	t.Parallel()
	u := newUser(t, "")
	db := filepath.Join(t.TempDir(), "fleet one.db") // a space to quote
	out := u.ok("", "--database-url", "sqlite:"+db, "demo", "--hosts", "3", "--progress", "none")
	elsewhere := t.TempDir()
	for _, line := range hints(t, out) {
		require.True(t, strings.HasPrefix(line, "canonlog "), line)
		if strings.HasPrefix(line, "canonlog tail ") {
			require.True(t, strings.HasSuffix(line, " -f"), line)
			line = strings.TrimSuffix(line, " -f") // not until interrupted
		}
		// As copied, but smaller: the test's time goes to the rest.
		line = strings.Replace(line, "gen --events 100000 ", "gen --events 1000 ", 1)
		sh := exec.Command("sh", "-c", line)
		sh.Dir = elsewhere
		sh.Env = append(slices.Clone(u.env), "PATH="+filepath.Dir(u.bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		res, err := sh.CombinedOutput()
		require.NoError(t, err, "%s: %s", line, res)
	}
	require.NoFileExists(t, filepath.Join(elsewhere, "canonlog.db"), "a hint used the default database")
}

// TestEndToEndDemoGoRun: run by 'go run', the demo's hints say 'go run
// ./cmd/canonlog', which works from the module's root.
func TestEndToEndDemoGoRun(t *testing.T) {
	t.Parallel()
	u := newUser(t, "")
	moduleRoot, err := filepath.Abs("../../..")
	require.NoError(t, err)
	url := "sqlite:" + filepath.Join(t.TempDir(), "fleet.db")
	goRun := func(args ...string) string {
		cmd := exec.Command("go", append([]string{"run", "./cmd/canonlog"}, args...)...)
		cmd.Dir, cmd.Env = moduleRoot, u.env
		out, err := cmd.Output()
		require.NoError(t, err, "go run %v: %s", args, out)
		return string(out)
	}
	lines := hints(t, goRun("demo", "--database-url", url, "--hosts", "2", "--progress", "none"))
	require.Equal(t, "go run ./cmd/canonlog status --database-url "+url, lines[0])
	require.Contains(t, goRun(strings.Fields(strings.TrimPrefix(lines[0], "go run ./cmd/canonlog "))...), "events:   ")
}
