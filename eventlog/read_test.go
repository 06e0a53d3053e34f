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

// readFixture appends 120 events spread over 3 kinds, 4 hosts, 5 rollouts
// and 120 seconds, and returns the filters the read tests check, each with
// the seqs it matches in order.
func readFixture(t *testing.T, log *eventlog.Log) []readCase {
	t.Helper()
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
	res, err := log.AppendBatch(context.Background(), entries)
	require.NoError(t, err)
	seqOf := func(i int) int64 { return res[i].Event.Seq }
	cases := []struct {
		name string
		f    eventlog.Filter
		pred func(i int) bool
	}{
		{"All", eventlog.Filter{}, func(int) bool { return true }},
		{"Host", eventlog.Filter{HostID: "h1"}, func(i int) bool { return i%4 == 1 }},
		{"Rollout", eventlog.Filter{RolloutID: "r2"}, func(i int) bool { return i%5 == 2 }},
		{"Kind", eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindEffect}}, func(i int) bool { return i%3 == 2 }},
		{"Kinds", eventlog.Filter{Kinds: []eventlog.Kind{eventlog.KindEffect, eventlog.KindAgentEvent}}, func(i int) bool { return i%3 != 1 }},
		{"After", eventlog.Filter{AfterSeq: seqOf(100)}, func(i int) bool { return i > 100 }},
		{"TimeRange", eventlog.Filter{Since: t0.Add(10 * time.Second), Until: t0.Add(20 * time.Second)}, func(i int) bool { return i >= 10 && i < 20 }},
		{"Combined", eventlog.Filter{HostID: "h0", RolloutID: "r0", AfterSeq: seqOf(0)}, func(i int) bool { return i > 0 && i%4 == 0 && i%5 == 0 }},
		{"NoMatch", eventlog.Filter{HostID: "nobody"}, func(int) bool { return false }},
		{"NoMatchAfter", eventlog.Filter{HostID: "nobody", AfterSeq: seqOf(7)}, func(int) bool { return false }},
	}
	out := make([]readCase, len(cases))
	for i, c := range cases {
		out[i] = readCase{name: c.name, f: c.f}
		for j := range entries {
			if c.pred(j) {
				out[i].seqs = append(out[i].seqs, seqOf(j))
			}
		}
	}
	return out
}

type readCase struct {
	name string
	f    eventlog.Filter
	seqs []int64 // the matches, in seq order
}

func TestCount(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)

		n, err := log.Count(ctx, eventlog.Filter{})
		require.NoError(t, err)
		require.Zero(t, n, "an empty log")

		for _, c := range readFixture(t, log) {
			n, err := log.Count(ctx, c.f)
			require.NoError(t, err, c.name)
			require.Equal(t, int64(len(c.seqs)), n, c.name)
		}

		// CountTx counts in the caller's transaction: its own uncommitted
		// append, which no one else sees yet.
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		_, err = log.AppendTx(ctx, tx, eventlog.Entry{Kind: eventlog.KindEffect, HostID: "h-tx", Payload: json.RawMessage(`{}`)})
		require.NoError(t, err)
		f := eventlog.Filter{HostID: "h-tx"}
		n, err = log.CountTx(ctx, tx, f)
		require.NoError(t, err)
		require.Equal(t, int64(1), n)
		n, err = log.Count(ctx, f)
		require.NoError(t, err)
		require.Zero(t, n)
		require.NoError(t, tx.Rollback())

		_, err = log.Count(ctx, eventlog.Filter{Limit: 10})
		require.ErrorIs(t, err, eventlog.ErrInvalidFilter, "a limit means nothing to a count")
	})
}

func TestLastSeqTx(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)

		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		last, err := log.LastSeqTx(ctx, tx)
		require.NoError(t, err)
		require.Zero(t, last, "an empty log")

		// It reads in the caller's transaction: its own uncommitted
		// append, which LastSeq does not see.
		res, err := log.AppendTx(ctx, tx, entry("h1", `{}`))
		require.NoError(t, err)
		last, err = log.LastSeqTx(ctx, tx)
		require.NoError(t, err)
		require.Equal(t, res[0].Event.Seq, last)
		outside, err := log.LastSeq(ctx)
		require.NoError(t, err)
		require.Zero(t, outside)
		require.NoError(t, tx.Commit())

		outside, err = log.LastSeq(ctx)
		require.NoError(t, err)
		require.Equal(t, res[0].Event.Seq, outside)
	})
}

func TestTailStart(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)

		start, err := log.TailStart(ctx, eventlog.Filter{}, 10)
		require.NoError(t, err)
		require.Zero(t, start, "an empty log")

		for _, c := range readFixture(t, log) {
			m := len(c.seqs)
			for _, n := range []int{0, 1, 5, m - 1, m, m + 1, 1000} {
				if n < 0 {
					continue
				}
				start, err := log.TailStart(ctx, c.f, n)
				require.NoError(t, err, "%s, n=%d", c.name, n)
				want := c.f.AfterSeq // every match is among the last n
				if n < m {
					want = c.seqs[m-n-1]
				}
				require.Equal(t, want, start, "%s, n=%d", c.name, n)

				// Querying from it reads exactly the last n matches.
				q := c.f
				q.AfterSeq, q.Limit = start, eventlog.MaxQueryLimit
				got, err := log.Query(ctx, q)
				require.NoError(t, err)
				wantSeqs := c.seqs[max(0, m-n):]
				require.Len(t, got, len(wantSeqs), "%s, n=%d", c.name, n)
				for i, ev := range got {
					require.Equal(t, wantSeqs[i], ev.Seq, "%s, n=%d", c.name, n)
				}
			}
		}

		// TailStartTx counts back over the caller's transaction's own
		// uncommitted appends.
		tx, err := db.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		f := eventlog.Filter{HostID: "h-tx"}
		var seqs []int64
		for range 3 {
			res, err := log.AppendTx(ctx, tx, eventlog.Entry{Kind: eventlog.KindEffect, HostID: "h-tx", Payload: json.RawMessage(`{}`)})
			require.NoError(t, err)
			seqs = append(seqs, res[0].Event.Seq)
		}
		start, err = log.TailStartTx(ctx, tx, f, 2)
		require.NoError(t, err)
		require.Equal(t, seqs[0], start)
		start, err = log.TailStart(ctx, f, 2)
		require.NoError(t, err)
		require.Zero(t, start, "uncommitted: no match outside the transaction")
		require.NoError(t, tx.Rollback())

		for _, bad := range []struct {
			f eventlog.Filter
			n int
		}{{eventlog.Filter{}, -1}, {eventlog.Filter{Limit: 5}, 5}} {
			_, err := log.TailStart(ctx, bad.f, bad.n)
			require.ErrorIs(t, err, eventlog.ErrInvalidFilter, "%+v, n=%d", bad.f, bad.n)
		}
	})
}

// LagAge: how long ago the first event after a reader's position was
// stamped; 0 when it has read everything of its filter.
func TestLagAge(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil) // the fake clock stamps t0, in the past
		res, err := log.Append(ctx, entry("h1", `{}`))
		require.NoError(t, err)
		age, err := log.LagAge(ctx, eventlog.Filter{HostID: "h1"})
		require.NoError(t, err)
		require.Greater(t, age, time.Since(t0)-time.Minute)
		age, err = log.LagAge(ctx, eventlog.Filter{HostID: "h1", AfterSeq: res.Event.Seq})
		require.NoError(t, err)
		require.Zero(t, age)
		age, err = log.LagAge(ctx, eventlog.Filter{HostID: "h2"})
		require.NoError(t, err)
		require.Zero(t, age)
		_, err = log.LagAge(ctx, eventlog.Filter{Limit: 1})
		require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
	})
}
