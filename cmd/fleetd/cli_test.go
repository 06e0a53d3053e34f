package main

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/canonlog/canonlog/internal/testio"
	"github.com/stretchr/testify/require"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sqliteURL := func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "fleetd.db") }

	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		"help":            {args: []string{"-h"}, code: exitOK, want: "fleetd [flags] rebuild [NAME…]"},
		"unknown_flag":    {args: []string{"-port", "80"}, code: exitUsage, want: "flag provided but not defined: -port"},
		"unknown_command": {args: []string{"serve"}, code: exitUsage, want: `unknown command "serve"`},
		"bad_env":         {env: map[string]string{"CANONLOG_STALE_POLICY": "later"}, code: exitUsage, want: `CANONLOG_STALE_POLICY="later": use refuse, rebuild or ignore`},
		"bad_timeout":     {args: []string{"-start-timeout", "0s"}, code: exitUsage, want: "-start-timeout"},
		"bad_url":         {args: []string{"-database-url", "mysql://db", "rebuild"}, code: exitFailure, want: "unknown scheme"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr testio.SyncBuffer
			code := run(ctx, tc.args, envOf(tc.env), &stdout, &stderr)
			require.Equal(t, tc.code, code, stderr.String())
			require.Contains(t, stderr.String(), tc.want)
		})
	}

	t.Run("port_taken", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		var stdout, stderr testio.SyncBuffer
		code := run(ctx, []string{"-addr", ln.Addr().String(), "-database-url", sqliteURL(t)}, noEnv, &stdout, &stderr)
		require.Equal(t, exitFailure, code)
		require.Contains(t, stderr.String(), "listen on "+ln.Addr().String())
	})

	t.Run("addr_from_env", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		var stdout, stderr testio.SyncBuffer
		env := map[string]string{"FLEETD_ADDR": ln.Addr().String(), "CANONLOG_DATABASE_URL": sqliteURL(t)}
		require.Equal(t, exitFailure, run(ctx, nil, envOf(env), &stdout, &stderr))
		require.Contains(t, stderr.String(), "listen on "+ln.Addr().String())
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
			for _, args := range [][]string{{"-database-url", url, "rebuild"}, {"-database-url", url, "-addr", "127.0.0.1:0"}} {
				var stdout, stderr testio.SyncBuffer
				require.Equal(t, exitFailure, run(ctx, args, noEnv, &stdout, &stderr))
				require.Contains(t, stderr.String(), "xxxxx", "the database is named, its password hidden")
				require.NotContains(t, stdout.String()+stderr.String(), secret)
			}
		}
	})

	t.Run("rebuild_all", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr testio.SyncBuffer
		require.Equal(t, exitOK, run(ctx, []string{"rebuild"}, envOf(map[string]string{"DATABASE_URL": sqliteURL(t)}), &stdout, &stderr), stderr.String())
		require.Contains(t, stdout.String(), "rebuilt probe_failures (version 1): 0 events replayed")
		require.Contains(t, stdout.String(), "rebuilt rollout_progress (version 1): 0 events replayed")
	})
}
