package eventlog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

func TestQuery(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil)
		kinds := []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindPlanAction, eventlog.KindEffect}
		var entries []eventlog.Entry
		for i := range 120 {
			entries = append(entries, eventlog.Entry{
				Kind:      kinds[i%3],
				TS:        t0.Add(time.Duration(i) * time.Second),
				HostID:    fmt.Sprint("h", i%4),
				RolloutID: fmt.Sprint("r", i%5),
				Payload:   json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
			})
		}
		res, err := log.AppendBatch(ctx, entries)
		require.NoError(t, err)
		seqOf := func(i int) int64 { return res[i].Event.Seq }

		// want lists the entry indexes matching pred, in order.
		want := func(pred func(i int) bool, limit int) []int64 {
			var out []int64
			for i := range entries {
				if pred(i) && len(out) < limit {
					out = append(out, seqOf(i))
				}
			}
			return out
		}
		seqs := func(evs []eventlog.Event) []int64 {
			out := []int64{}
			for _, ev := range evs {
				out = append(out, ev.Seq)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			f    eventlog.Filter
			pred func(i int) bool
			lim  int
		}{
			{"All", eventlog.Filter{}, func(int) bool { return true }, eventlog.DefaultQueryLimit},
			{"Host", eventlog.Filter{HostID: "h1"}, func(i int) bool { return i%4 == 1 }, 100},
			{"Rollout", eventlog.Filter{RolloutID: "r2", Limit: 7}, func(i int) bool { return i%5 == 2 }, 7},
			{"Kind", eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindEffect}}, func(i int) bool { return i%3 == 2 }, 100},
			{"Kinds", eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindEffect, eventlog.KindAgentEvent}}, func(i int) bool { return i%3 != 1 }, 100},
			{"After", eventlog.Filter{AfterSeq: seqOf(100)}, func(i int) bool { return i > 100 }, 100},
			{"TimeRange", eventlog.Filter{Since: t0.Add(10 * time.Second), Until: t0.Add(20 * time.Second)}, func(i int) bool { return i >= 10 && i < 20 }, 100},
			{"Combined", eventlog.Filter{HostID: "h0", RolloutID: "r0", AfterSeq: seqOf(0)}, func(i int) bool { return i > 0 && i%4 == 0 && i%5 == 0 }, 100},
			{"NoMatch", eventlog.Filter{HostID: "nobody"}, func(int) bool { return false }, 100},
		} {
			got, err := log.Query(ctx, tc.f)
			require.NoError(t, err, tc.name)
			w := want(tc.pred, tc.lim)
			if w == nil {
				w = []int64{}
			}
			require.Equal(t, w, seqs(got), tc.name)
		}

		// Paging with the cursor visits every event once, in order.
		var all []int64
		f := eventlog.Filter{Limit: 17}
		for {
			page, err := log.Query(ctx, f)
			require.NoError(t, err)
			if len(page) == 0 {
				break
			}
			all = append(all, seqs(page)...)
			f.AfterSeq = page[len(page)-1].Seq
		}
		require.Equal(t, want(func(int) bool { return true }, 1000), all)

		for _, bad := range []eventlog.Filter{
			{Limit: -1},
			{Limit: eventlog.MaxQueryLimit + 1},
			{Limit: 1 << 40},
			{AfterSeq: -5},
			{Since: t0, Until: t0},
			{Kinds: []eventlog.Kind{"Bad Kind"}},
		} {
			_, err := log.Query(ctx, bad)
			require.Error(t, err, "%+v", bad)
			require.True(t, isFilterErr(err), "%+v: %v", bad, err)
		}
	})
}

func isFilterErr(err error) bool {
	return errors.Is(err, eventlog.ErrInvalidFilter) || errors.Is(err, eventlog.ErrInvalidKind)
}

func TestPages(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil)
		var entries []eventlog.Entry
		for i := range 1000 {
			kind := eventlog.KindAgentEvent
			if i%10 == 0 {
				kind = eventlog.KindRolloutEvent
			}
			entries = append(entries, eventlog.Entry{Kind: kind, HostID: "h", Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		}
		res, err := log.AppendBatch(ctx, entries)
		require.NoError(t, err)

		var (
			got      []int64
			maxPage  int
			numPages int
		)
		for page, err := range log.Pages(ctx, 0, &eventlog.ReadOptions{PageSize: 64}) {
			require.NoError(t, err)
			numPages++
			maxPage = max(maxPage, len(page))
			for _, ev := range page {
				got = append(got, ev.Seq)
			}
		}
		require.Len(t, got, 1000)
		require.Equal(t, 64, maxPage, "pages are bounded by PageSize")
		require.Equal(t, 16, numPages)
		for i := range got {
			require.Equal(t, res[i].Event.Seq, got[i])
		}

		// From a seq, with a kind filter, one event at a time.
		var kinds []int64
		for ev, err := range log.Events(ctx, res[499].Event.Seq, &eventlog.ReadOptions{Kinds: []eventlog.Kind{eventlog.KindRolloutEvent}, PageSize: 7}) {
			require.NoError(t, err)
			require.Equal(t, eventlog.KindRolloutEvent, ev.Kind)
			kinds = append(kinds, ev.Seq)
		}
		require.Len(t, kinds, 50)
		require.Equal(t, res[500].Event.Seq, kinds[0])

		// Breaking out early stops the stream.
		n := 0
		for _, err := range log.Events(ctx, 0, nil) {
			require.NoError(t, err)
			n++
			if n == 3 {
				break
			}
		}
		require.Equal(t, 3, n)

		// Bad options surface as the stream's error.
		for _, err := range log.Pages(ctx, 0, &eventlog.ReadOptions{PageSize: -1}) {
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
		}
		for _, err := range log.Pages(ctx, -1, nil) {
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
		}

		// Inside a transaction: sees the transaction's own appends.
		tx, err := log.DB().BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		_, err = log.AppendTx(ctx, tx, entry("h", `{"in":"tx"}`))
		require.NoError(t, err)
		count := 0
		for page, err := range log.PagesTx(ctx, tx, res[999].Event.Seq, nil) {
			require.NoError(t, err)
			count += len(page)
		}
		require.Equal(t, 1, count)
	})
}

func TestOpenDB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, bad := range []string{"", "mysql://x", "sqlite:", "postgres://%zz"} {
		_, err := eventlog.OpenDB(ctx, bad)
		require.Error(t, err, bad)
	}
	_, err := eventlog.OpenDB(ctx, "postgres://alice:s3cret@127.0.0.1:1/db?sslmode=disable&connect_timeout=1")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret", "passwords never reach error messages")
	_, err = eventlog.OpenDB(ctx, "postgres://alice@127.0.0.1:1/db?sslmode=disable&password=s3cret&connect_timeout=1")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret", "nor as a query parameter")
	_, err = eventlog.OpenDB(ctx, "postgres://alice:s3cret@host:bad-port/db")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret", "nor from an unparsable URL")

	// Pragmas hold on every pooled connection of a file database.
	db, err := eventlog.OpenDB(ctx, "sqlite:"+t.TempDir()+"/x.db")
	require.NoError(t, err)
	defer db.Close()
	conns := make([]interface{ Close() error }, 0, 4)
	for range 4 {
		c, err := db.Connx(ctx)
		require.NoError(t, err)
		conns = append(conns, c)
		var fk, busy int
		var mode string
		require.NoError(t, c.GetContext(ctx, &fk, `PRAGMA foreign_keys`))
		require.NoError(t, c.GetContext(ctx, &busy, `PRAGMA busy_timeout`))
		require.NoError(t, c.GetContext(ctx, &mode, `PRAGMA journal_mode`))
		require.Equal(t, 1, fk)
		require.Equal(t, 10000, busy)
		require.Equal(t, "wal", mode)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}

	// Two in-memory databases are separate.
	m1, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	require.NoError(t, err)
	defer m1.Close()
	m2, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	require.NoError(t, err)
	defer m2.Close()
	_, err = m1.Exec(`CREATE TABLE only_in_m1 (x)`)
	require.NoError(t, err)
	_, err = m2.Exec(`SELECT * FROM only_in_m1`)
	require.Error(t, err)
}

// Pages are bounded by payload bytes too: large payloads make short pages,
// and every event still comes through once, in order.
func TestPagesByteBudget(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil)
		big := `"` + strings.Repeat("x", 10_000) + `"`
		var entries []eventlog.Entry
		for i := range 60 {
			p := `{}`
			if i%2 == 0 {
				p = big
			}
			entries = append(entries, entry("h", p))
		}
		_, err := log.AppendBatch(ctx, entries)
		require.NoError(t, err)
		var seqs []int64
		for page, err := range log.Pages(ctx, 0, &eventlog.ReadOptions{PageSize: 50, MaxPageBytes: 35_000}) {
			require.NoError(t, err)
			size := 0
			for _, ev := range page {
				size += len(ev.Payload)
				seqs = append(seqs, ev.Seq)
			}
			require.Less(t, size-len(page[len(page)-1].Payload), 35_000, "the page stopped once it reached the budget")
		}
		require.Len(t, seqs, 60)
		for i := range seqs {
			require.EqualValues(t, i+1, seqs[i])
		}
		for _, err := range log.Pages(ctx, 0, &eventlog.ReadOptions{MaxPageBytes: -1}) {
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
		}
	})
}
