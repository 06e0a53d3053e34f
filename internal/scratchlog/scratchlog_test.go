package scratchlog_test

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/scratchlog"
)

// Open gives a log that takes appends; Write counts every call; Close
// drops the scratch database on both backends.
func TestOpenWriteClose(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		base := "sqlite:" + t.TempDir() + "/base.db"
		if backend == "postgres" {
			base = dbtest.PostgresURL()
		}
		var out bytes.Buffer
		sl, err := scratchlog.Open(ctx, base, "canonlog_test_scratchlog", &out)
		require.NoError(t, err)
		res, err := scratchlog.Write(ctx, 2, 100*time.Millisecond, func(ctx context.Context, w int) error {
			_, err := sl.Log.Append(ctx, scratchlog.Entry(w))
			return err
		})
		require.NoError(t, err)
		require.NotEmpty(t, res.Latencies)
		require.Positive(t, res.Rate)
		n, err := sl.Log.LastSeq(ctx)
		require.NoError(t, err)
		require.EqualValues(t, len(res.Latencies), n, "every call an event")

		_, err = scratchlog.Write(ctx, 1, time.Second, func(context.Context, int) error { return os.ErrInvalid })
		require.ErrorIs(t, err, os.ErrInvalid)

		require.NoError(t, sl.Close())
		require.Contains(t, out.String(), "removed the scratch database")
		name := regexp.MustCompile(`scratch database (\S+)`).FindStringSubmatch(out.String())
		require.NotNil(t, name, out.String())
		if backend == "postgres" {
			var left int
			require.NoError(t, dbtest.Admin(t).Get(&left, `SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1`, name[1]))
			require.Zero(t, left)
		}
	})
}
