package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/app"
)

// TestStartupError: a serve that cannot start says why in one line, the
// cause first-hand, without fx's framing (the graph's functions, source
// paths, a stack) or its error logs.
func TestStartupError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	missingDir := "sqlite:" + filepath.Join(t.TempDir(), "no", "such", "dir", "fleetd.db")
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want []string
	}{
		"postgres_unreachable": {
			args: []string{"--database-url", "postgres://nouser@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"},
			want: []string{"fleetd: open the database (--database-url, CANONLOG_DATABASE_URL): connect to postgres://nouser@127.0.0.1:1/x", "connection refused"},
		},
		"sqlite_unopenable": {
			args: []string{"serve", "--database-url", missingDir, "--addr", "127.0.0.1:0"},
			want: []string{"fleetd: open the database (--database-url, CANONLOG_DATABASE_URL): connect to " + missingDir, "unable to open database file"},
		},
		"from_the_environment": {
			env:  map[string]string{"CANONLOG_DATABASE_URL": missingDir},
			want: []string{"fleetd: open the database (--database-url, CANONLOG_DATABASE_URL): connect to " + missingDir},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runFleetd(ctx, tc.env, tc.args...)
			require.Equal(t, exitFailure, code, stderr)
			require.Empty(t, stdout)
			require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %s", stderr)
			for _, w := range tc.want {
				require.Contains(t, stderr, w)
			}
			for _, internal := range []string{".go:", "could not build arguments", "received non-nil error", "failed to build", "app: ", "eventlog: ", "level=ERROR"} {
				require.NotContains(t, stderr, internal)
			}
		})
	}

	// What fx.Error carries (an invalid Config) comes out the same way.
	t.Run("invalid_limits", func(t *testing.T) {
		t.Parallel()
		cfg := Config{Addr: "127.0.0.1:0", Canonlog: app.Config{DatabaseURL: "sqlite::memory:"}, Logger: slog.New(slog.DiscardHandler),
			Limits: Limits{RequestTimeout: time.Minute, WriteTimeout: time.Second}}
		err := serve(ctx, cfg, time.Minute)
		require.EqualError(t, err, "invalid limits: write timeout (Limits.WriteTimeout) is 1s: it must exceed the request timeout (1m0s) and the read timeout (15s), or the answer to a request that ran out of time could not be written")
	})

	t.Run("unwraps_to_the_cause", func(t *testing.T) {
		t.Parallel()
		cause := errors.New("the cause")
		err := startupError(cause)
		require.ErrorIs(t, err, cause)
		require.Equal(t, "the cause", err.Error())
	})
}
