package main

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// runFleetd runs fleetd's command line with the environment env (for
// serve) and no standard input.
func runFleetd(ctx context.Context, env map[string]string, args ...string) (stdout, stderr string, code int) {
	var out, errOut testio.SyncBuffer
	code = run(ctx, args, envOf(env), strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

// cliCase is a command line of fleetd's, its environment, and the exit
// code and output (each of want within stdout and stderr) it must give.
type cliCase struct {
	args []string
	env  map[string]string
	code int
	want []string
}

// runCases runs each case as a parallel subtest.
func runCases(t *testing.T, cases map[string]cliCase) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runFleetd(context.Background(), tc.env, tc.args...)
			require.Equal(t, tc.code, code, stderr)
			for _, want := range tc.want {
				require.Contains(t, stdout+stderr, want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sqliteURL := func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "fleetd.db") }

	runCases(t, map[string]cliCase{
		// The help lists serve and every command canonlog has.
		"help": {args: []string{"--help"}, code: exitOK,
			want: []string{"fleetd [command]", "serve", "migrate", "append", "query", "tail", "rebuild", "verify", "status", "sqlite:fleetd.db"}},
		"serve_help": {args: []string{"serve", "--help"}, code: exitOK,
			want: []string{"--addr", "--start-timeout", "--database-url", "FLEETD_ADDR", "CANONLOG_STALE_POLICY"}},
		"unknown_flag":    {args: []string{"--port", "80"}, code: exitUsage, want: []string{"unknown flag: --port"}},
		"unknown_command": {args: []string{"deploy"}, code: exitUsage, want: []string{`unknown command "deploy"`}},
		// The older command line's single-dash flags get the fix named.
		"single_dash_flag":  {args: []string{"-addr", ":8080"}, code: exitUsage, want: []string{"-addr: fleetd's flags take two dashes: --addr"}},
		"single_dash_value": {args: []string{"-database-url=sqlite:x.db", "rebuild", "--all"}, code: exitUsage, want: []string{"--database-url"}},
		// A malformed environment fails serve (exit 1), as a malformed
		// CANONLOG_DATABASE_URL fails canonlog's commands.
		"bad_env": {env: map[string]string{"CANONLOG_STALE_POLICY": "later"}, code: exitFailure,
			want: []string{`CANONLOG_STALE_POLICY="later": use refuse, rebuild, ignore or rebuild-online`}},
		"bad_timeout":         {args: []string{"serve", "--start-timeout", "0s"}, code: exitUsage, want: []string{"--start-timeout", "use a positive duration"}},
		"bad_timeout_default": {args: []string{"--start-timeout", "-1m"}, code: exitUsage, want: []string{"--start-timeout", "use a positive duration"}},
		"bad_url":             {args: []string{"--database-url", "mysql://db", "rebuild", "--all"}, code: exitFailure, want: []string{"fleetd: ", "unknown scheme"}},
		"serve_bad_url":       {args: []string{"serve", "--database-url", "mysql://db"}, code: exitFailure, want: []string{"fleetd: ", "unknown scheme"}},
	})

	t.Run("port_taken", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		for _, args := range [][]string{
			{"serve", "--addr", ln.Addr().String(), "--database-url", sqliteURL(t)},
			// Without a command, serve's flags are serve's.
			{"--addr", ln.Addr().String(), "--database-url", sqliteURL(t)},
			{"--database-url=" + sqliteURL(t), "--addr=" + ln.Addr().String()},
		} {
			_, stderr, code := runFleetd(ctx, nil, args...)
			require.Equal(t, exitFailure, code, "%v", args)
			require.Contains(t, stderr, "listen on "+ln.Addr().String(), "%v", args)
		}
	})

	t.Run("addr_from_env", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		env := map[string]string{"FLEETD_ADDR": ln.Addr().String(), "CANONLOG_DATABASE_URL": sqliteURL(t)}
		_, stderr, code := runFleetd(ctx, env) // bare fleetd serves
		require.Equal(t, exitFailure, code)
		require.Contains(t, stderr, "listen on "+ln.Addr().String())
	})

	// A database fleetd cannot open is named without its password, in
	// whichever form the password was given.
	t.Run("password_hidden", func(t *testing.T) {
		t.Parallel()
		const secret = "s3cret-pw-42"
		for _, url := range []string{
			"postgres://svc:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
			"postgres://svc@127.0.0.1:1/db?password=" + secret + "&sslmode=disable&connect_timeout=2",
			"host=127.0.0.1 user=svc password='" + secret + "' dbname=db",
		} {
			for _, args := range [][]string{
				{"--database-url", url, "rebuild", "--all"},
				{"--database-url", url, "status"},
				{"serve", "--database-url", url, "--addr", "127.0.0.1:0"},
			} {
				stdout, stderr, code := runFleetd(ctx, nil, args...)
				require.Equal(t, exitFailure, code, "%v: %s", args[2:], stderr)
				require.Contains(t, stderr, "xxxxx", "the database is named, its password hidden")
				require.NotContains(t, stdout+stderr, secret)
			}
		}
	})
}

func TestWithDefaultCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ args, want []string }{
		{nil, []string{"serve"}},
		{[]string{"--addr", ":80"}, []string{"serve", "--addr", ":80"}},
		{[]string{"--addr=:80", "--database-url", "sqlite:x.db", "--start-timeout", "2m"}, []string{"serve", "--addr=:80", "--database-url", "sqlite:x.db", "--start-timeout", "2m"}},
		{[]string{"--database-url", "sqlite:x.db", "status"}, []string{"--database-url", "sqlite:x.db", "status"}},
		{[]string{"--database-url", "rebuild"}, []string{"serve", "--database-url", "rebuild"}}, // "rebuild" is the URL
		{[]string{"serve", "--addr", ":80"}, []string{"serve", "--addr", ":80"}},
		{[]string{"--help"}, []string{"--help"}},
		{[]string{"rebuild", "rollout_progress"}, []string{"rebuild", "rollout_progress"}},
		// --insecure-no-auth takes no value: the flag after it is a flag.
		{[]string{"--insecure-no-auth", "--addr", ":80"}, []string{"serve", "--insecure-no-auth", "--addr", ":80"}},
		{[]string{"--tokens-file", "t", "--insecure-no-auth"}, []string{"serve", "--tokens-file", "t", "--insecure-no-auth"}},
	} {
		require.Equal(t, tc.want, withDefaultCommand(tc.args), "%q", tc.args)
	}
}

// TestServeByDefault: a bare fleetd (flags only) serves until its context
// ends, then stops cleanly with exit 0.
func TestServeByDefault(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		url := dbtest.New(t, backend).URL
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		addr, stderr, done := serving(t, ctx, "--addr", "127.0.0.1:0", "--database-url", url)

		hc := &http.Client{}
		resp, err := hc.Get("http://" + addr + "/healthz")
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode)
		hc.CloseIdleConnections()

		cancel()
		select {
		case code := <-done:
			require.Equal(t, exitOK, code, stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatal("fleetd did not stop when its context ended")
		}
		require.Contains(t, stderr.String(), `msg="fleetd: shutting down" cause="context canceled"`)
		require.Contains(t, stderr.String(), `msg="fleetd: stopped"`)
		_, err = net.DialTimeout("tcp", addr, time.Second)
		require.Error(t, err, "the port is released on stop")
	})
}

// fleetd serves at once when a projection is stale, and rebuilds it
// online beside the live view (CANONLOG_STALE_POLICY unset means
// rebuild-online for fleetd).
func TestServeRebuildsStaleOnline(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		b := dbtest.New(t, backend)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cli := func(args ...string) {
			t.Helper()
			var stdout, stderr testio.SyncBuffer
			code := run(ctx, append(args, "--database-url", b.URL), noEnv, strings.NewReader(""), &stdout, &stderr)
			require.Equal(t, exitOK, code, "%s: %s", args, stderr.String())
		}
		cli("migrate", "up")
		cli("append", "--kind", "agent_event", "--host", "web-1", "--rollout", "r-1", "--event-id", "web-1/1",
			"--payload", `{"type":"Heartbeat","status":"ok"}`)
		// As after a deploy that bumped rollout_progress's version.
		db := b.Open(t)
		_, err := db.Exec(`UPDATE canonlog_projections SET version = 0 WHERE name = 'rollout_progress'`)
		require.NoError(t, err)
		_, err = db.Exec(`DELETE FROM rollout_progress`)
		require.NoError(t, err)

		var stdout, stderr testio.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--database-url", b.URL}, noEnv, strings.NewReader(""), &stdout, &stderr)
		}()
		require.Eventually(t, func() bool {
			return strings.Contains(stderr.String(), `msg="canonlog: projection rebuilt in the background" name=rollout_progress`) &&
				strings.Contains(stderr.String(), `msg="fleetd: started"`)
		}, time.Minute, 10*time.Millisecond, "no background rebuild: %s", &stderr)
		require.Contains(t, stderr.String(), "fleetd: listening")
		require.Contains(t, stderr.String(), "online=true")
		var last string
		require.NoError(t, db.Get(&last, `SELECT last_type FROM rollout_progress WHERE host_id = 'web-1'`))
		require.Equal(t, "Heartbeat", last)
		var version int
		require.NoError(t, db.Get(&version, `SELECT version FROM canonlog_projections WHERE name = 'rollout_progress'`))
		require.Positive(t, version)

		cancel()
		select {
		case code := <-done:
			require.Equal(t, exitOK, code, stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatal("fleetd did not stop when its context ended")
		}
	})
}

// serving runs fleetd with args until ctx ends, and returns once it has
// started (not only listening: a stop that arrives while start hooks
// still run is an interrupted start, exit 130): the address it listens
// on, its stderr, and the channel its exit code arrives on.
func serving(t *testing.T, ctx context.Context, args ...string) (addr string, stderr *testio.SyncBuffer, done <-chan int) {
	t.Helper()
	var stdout testio.SyncBuffer
	stderr = &testio.SyncBuffer{}
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, args, noEnv, strings.NewReader(""), &stdout, stderr) }()
	listening := regexp.MustCompile(`fleetd: listening" addr=(\S+)`)
	require.Eventually(t, func() bool {
		m := listening.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil && strings.Contains(stderr.String(), `msg="fleetd: started"`)
	}, 30*time.Second, 10*time.Millisecond, "fleetd did not start: %s", stderr)
	return addr, stderr, exit
}
