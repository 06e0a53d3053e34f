package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// A projection's timestamp column written with FormatTime and read with
// ScanTime gives back NormalizeTime's value on both backends, and sorts
// and compares in time order, whatever zones the times came in.
func TestTimeHelpers(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		db := dbtest.New(t, backend).Open(t)
		b, err := eventlog.BackendOf(db)
		require.NoError(t, err)
		column := "TEXT"
		if b == eventlog.Postgres {
			column = "TIMESTAMPTZ"
		}
		_, err = db.ExecContext(ctx, `CREATE TABLE times (id INTEGER PRIMARY KEY, at `+column+` NULL)`)
		require.NoError(t, err)

		east, west := time.FixedZone("east", 9*3600), time.FixedZone("west", -7*3600)
		// In time order; their local clock readings are not.
		times := []time.Time{
			time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(2026, 5, 16, 10, 0, 0, 123456789, east), // 01:00:00.123456789Z
			time.Date(2026, 5, 15, 18, 0, 0, 123457000, west), // 01:00:00.123457Z
			time.Date(2026, 5, 16, 1, 0, 1, 0, time.UTC),
			time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		}
		// Inserted out of order, so that the ORDER BY below does the work.
		for _, i := range []int{3, 0, 4, 2, 1} {
			_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO times (id, at) VALUES (?, ?)`), i, eventlog.FormatTime(times[i]))
			require.NoError(t, err)
		}
		require.Equal(t, "2026-05-16T01:00:00.123456Z", eventlog.FormatTime(times[1]), "truncated, in UTC")

		rows, err := db.QueryxContext(ctx, `SELECT id, at FROM times ORDER BY at`)
		require.NoError(t, err)
		defer rows.Close()
		var order []int
		for rows.Next() {
			var (
				id int
				at time.Time
			)
			require.NoError(t, rows.Scan(&id, eventlog.ScanTime(&at)))
			order = append(order, id)
			want := eventlog.NormalizeTime(times[id])
			require.True(t, want.Equal(at), "%d: stored %s, want %s", id, at, want)
			require.Equal(t, want, at, "%d: the same instant, in UTC", id)
			require.Equal(t, time.UTC, at.Location())
		}
		require.NoError(t, rows.Err())
		require.Equal(t, []int{0, 1, 2, 3, 4}, order, "ORDER BY is time order")

		var n int
		require.NoError(t, db.GetContext(ctx, &n, db.Rebind(`SELECT COUNT(*) FROM times WHERE at >= ? AND at < ?`),
			eventlog.FormatTime(times[1]), eventlog.FormatTime(times[3])))
		require.Equal(t, 2, n, "range conditions compare times")

		// A NULL is refused, not read as the zero time.
		_, err = db.ExecContext(ctx, `INSERT INTO times (id, at) VALUES (5, NULL)`)
		require.NoError(t, err)
		var at time.Time
		err = db.QueryRowxContext(ctx, `SELECT at FROM times WHERE id = 5`).Scan(eventlog.ScanTime(&at))
		require.ErrorContains(t, err, "cannot scan <nil> into a timestamp")

		if b == eventlog.Postgres {
			// The text form is what goes into an array bound to unnest.
			var got []time.Time
			rows, err := db.QueryxContext(ctx, `SELECT t::timestamptz FROM unnest($1::text[]) AS t`,
				pq.StringArray{eventlog.FormatTime(times[1]), eventlog.FormatTime(times[2])})
			require.NoError(t, err)
			defer rows.Close()
			for rows.Next() {
				var at time.Time
				require.NoError(t, rows.Scan(eventlog.ScanTime(&at)))
				got = append(got, at)
			}
			require.NoError(t, rows.Err())
			require.Equal(t, []time.Time{eventlog.NormalizeTime(times[1]), eventlog.NormalizeTime(times[2])}, got)
		}
	})
}
