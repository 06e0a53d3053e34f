package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

func TestRun(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		for _, view := range []string{"seq_view", "probe_failures"} {
			o := options{events: 300, projection: view, prefix: "canonlog_test_rebuildmem", databaseURL: "sqlite:" + t.TempDir()}
			if backend == "postgres" {
				o.databaseURL = dbtest.PostgresURL()
			}
			var out bytes.Buffer
			require.NoError(t, run(context.Background(), o, &out), view)
			require.Contains(t, out.String(), "RESULT backend="+backend, view)
			require.Contains(t, out.String(), "removed the scratch database", view)

			// The scratch database is gone.
			name := regexp.MustCompile(`scratch database (\S+)`).FindStringSubmatch(out.String())
			require.NotNil(t, name, out.String())
			if backend == "postgres" {
				var n int
				require.NoError(t, dbtest.Admin(t).Get(&n, `SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1`, name[1]))
				require.Zero(t, n, "schema %s left behind", name[1])
			} else {
				entries, err := os.ReadDir(o.databaseURL[len("sqlite:"):])
				require.NoError(t, err)
				require.Empty(t, entries, "files left behind")
			}
		}
	})
}
