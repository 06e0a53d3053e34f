package eventlog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// badFilters are filter values PostgreSQL would refuse with a driver error
// (22008 datetime out of range, 22021 invalid byte sequence) and SQLite
// would run: the log refuses them before either sees them, naming the
// field.
var badFilters = []struct {
	name  string
	f     eventlog.Filter
	field string
	want  string
}{
	{"host not UTF-8", eventlog.Filter{HostID: "\xff"}, "HostID", "not valid UTF-8"},
	{"host with NUL", eventlog.Filter{HostID: "h\x00"}, "HostID", "contains a NUL byte"},
	{"host over 512 bytes", eventlog.Filter{HostID: strings.Repeat("h", 513)}, "HostID", "513 bytes, at most 512 allowed"},
	{"rollout not UTF-8", eventlog.Filter{RolloutID: "r\xc3\x28"}, "RolloutID", "not valid UTF-8"},
	{"rollout with NUL", eventlog.Filter{RolloutID: "\x00"}, "RolloutID", "contains a NUL byte"},
	{"kind not UTF-8", eventlog.Filter{Kinds: []eventlog.Kind{"effect", "\xff"}}, "Kinds", "invalid kind"},
	{"since year 0000", eventlog.Filter{Since: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)}, "Since", "0000-01-01T00:00:00Z is outside years 0001-9999"},
	{"since year 0000 in UTC", eventlog.Filter{Since: time.Date(1, 1, 1, 0, 30, 0, 0, time.FixedZone("", 3600))}, "Since", "0000-12-31T23:30:00Z is outside years 0001-9999"},
	{"until year 10000", eventlog.Filter{Until: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "Until", "10000-01-01T00:00:00Z is outside years 0001-9999"},
	{"until past year 9999 in UTC", eventlog.Filter{Until: time.Date(9999, 12, 31, 23, 30, 0, 0, time.FixedZone("", -3600))}, "Until", "10000-01-01T00:30:00Z is outside years 0001-9999"},
	{"until not after since", eventlog.Filter{Since: t0, Until: t0}, "Until", "is not after Since"},
	{"negative seq", eventlog.Filter{AfterSeq: -1}, "AfterSeq", "-1, must not be negative"},
	{"empty payload marker", eventlog.Filter{PayloadContains: []string{"fail", ""}}, "PayloadContains[1]", "empty: it would keep every event"},
	{"payload marker not UTF-8", eventlog.Filter{PayloadContains: []string{"\xff"}}, "PayloadContains[0]", "not valid UTF-8"},
	{"payload marker with NUL", eventlog.Filter{PayloadContains: []string{"a\x00"}}, "PayloadContains[0]", "contains a NUL byte"},
	{"payload marker over 256 bytes", eventlog.Filter{PayloadContains: []string{strings.Repeat("m", 257)}}, "PayloadContains[0]", "257 bytes, at most 256 allowed"},
	{"17 payload markers", eventlog.Filter{PayloadContains: strings.Fields(strings.Repeat("m ", 17))}, "PayloadContains", "17 strings, at most 16 allowed"},
}

// requireFilterError checks err is the refusal tc describes.
func requireFilterError(t *testing.T, err error, field, want string) {
	t.Helper()
	require.ErrorIs(t, err, eventlog.ErrInvalidFilter)
	var fe *eventlog.FilterError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, field, fe.Field)
	require.ErrorContains(t, err, want)
	require.False(t, eventlog.Retryable(err))
}

func TestFilterValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range badFilters {
		requireFilterError(t, tc.f.Validate(), tc.field, tc.want)
	}
	err := eventlog.Filter{Kinds: []eventlog.Kind{"Bad"}}.Validate()
	require.ErrorIs(t, err, eventlog.ErrInvalidKind, "a kind's refusal is both")
	require.ErrorIs(t, err, eventlog.ErrInvalidFilter)

	// The edges of what is stored are accepted, as for entries.
	for _, ok := range []eventlog.Filter{
		{},
		{HostID: strings.Repeat("h", 512), RolloutID: "ünïcode ✓"},
		{Since: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		{Since: time.Date(1, 1, 1, 1, 0, 0, 0, time.FixedZone("", 3600))},
		{PayloadContains: append(strings.Fields(strings.Repeat("m ", 15)), strings.Repeat("ü", 128))},
	} {
		require.NoError(t, ok.Validate(), "%+v", ok)
		require.NoError(t, eventlog.Entry{Kind: "effect", Payload: []byte("{}"), HostID: ok.HostID, RolloutID: ok.RolloutID, TS: ok.Since}.Validate(eventlog.DefaultMaxPayloadBytes),
			"what a filter accepts, an entry accepts")
	}
}

// TestFilterRefusedBeforeTheDatabase: Query, Count, TailStart (and their
// Tx twins), NewFollower and Pages refuse a bad filter with the same error on both backends, without
// a statement: on a closed pool, which fails any statement, the refusal is
// the same.
func TestFilterRefusedBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, db := setup(t, backend, nil)
		_, err := log.Append(ctx, entry("h1", `{}`))
		require.NoError(t, err)

		for _, tc := range badFilters {
			t.Run(tc.name, func(t *testing.T) {
				_, err := log.Query(ctx, tc.f)
				requireFilterError(t, err, tc.field, tc.want)

				_, err = log.Count(ctx, tc.f)
				requireFilterError(t, err, tc.field, tc.want)
				_, err = log.TailStart(ctx, tc.f, 10)
				requireFilterError(t, err, tc.field, tc.want)

				tx, err := db.BeginTxx(ctx, nil)
				require.NoError(t, err)
				_, err = log.QueryTx(ctx, tx, tc.f)
				requireFilterError(t, err, tc.field, tc.want)
				_, err = log.CountTx(ctx, tx, tc.f)
				requireFilterError(t, err, tc.field, tc.want)
				_, err = log.TailStartTx(ctx, tx, tc.f, 10)
				requireFilterError(t, err, tc.field, tc.want)
				require.NoError(t, tx.Rollback(), "the transaction is intact: no statement failed in it")

				if tc.f.AfterSeq == 0 {
					_, err = log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{Filter: tc.f})
					requireFilterError(t, err, tc.field, tc.want)
				}
			})
		}
		for _, err := range log.Pages(ctx, 0, &eventlog.ReadOptions{Kinds: []eventlog.Kind{"\xff"}}) {
			requireFilterError(t, err, "Kinds", "invalid kind")
		}
		for _, err := range log.Pages(ctx, 0, &eventlog.ReadOptions{PayloadContains: []string{""}}) {
			requireFilterError(t, err, "PayloadContains[0]", "empty")
		}
		for _, err := range log.Events(ctx, -1, nil) {
			requireFilterError(t, err, "AfterSeq", "must not be negative")
		}

		// Nothing reaches the database: with the pool closed, a good
		// filter fails on the statement and a bad one is refused as before.
		closed := dbtest.New(t, backend).Migrated(t)
		clog, err := eventlog.New(closed, nil)
		require.NoError(t, err)
		require.NoError(t, clog.Close())
		require.NoError(t, closed.Close())
		_, err = clog.Query(ctx, eventlog.Filter{HostID: "h1"})
		require.ErrorContains(t, err, "database is closed")
		for _, tc := range badFilters {
			_, err := clog.Query(ctx, tc.f)
			requireFilterError(t, err, tc.field, tc.want)
			_, err = clog.Count(ctx, tc.f)
			requireFilterError(t, err, tc.field, tc.want)
			_, err = clog.TailStart(ctx, tc.f, 10)
			requireFilterError(t, err, tc.field, tc.want)
		}
	})
}

// PayloadContains keeps the events whose stored payload holds one of the
// strings, byte for byte, on every read path and both backends: case and
// escapes count, whitespace is kept as appended, markers are ORed and
// ANDed with the other conditions.
func TestPayloadContains(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		log, _ := setup(t, backend, nil)
		payloads := []string{
			`{"status":"fail"}`,                 // 1: kept
			`{"status":"FAIL"}`,                 // 2: case differs
			`{"status":"f\u0061il"}`,            // 3: "fail" once decoded, not as stored
			`{"status": "fail" , "n": 1}`,       // 4: kept, spaces as appended
			`{"status":"pass"}`,                 // 5
			`{"note":"failover","x":"é"}`,       // 6: "fail" without the quotes
			`{"status":"fail","kind":"effect"}`, // 7: kept, but an effect
			`{"s":"ünïcode ✓"}`,                 // 8: kept by the second marker
		}
		for i, p := range payloads {
			e := entry("h1", p)
			if i == 6 {
				e.Kind = eventlog.KindEffect
			}
			_, err := log.Append(ctx, e)
			require.NoError(t, err)
		}
		seqs := func(events []eventlog.Event) []int64 {
			var out []int64
			for _, ev := range events {
				out = append(out, ev.Seq)
			}
			return out
		}
		markers := []string{`"fail"`, "ünïcode ✓"}
		f := eventlog.Filter{PayloadContains: markers}
		agents := eventlog.Filter{PayloadContains: markers, Kinds: []eventlog.Kind{eventlog.KindAgentEvent}}

		got, err := log.Query(ctx, f)
		require.NoError(t, err)
		require.Equal(t, []int64{1, 4, 7, 8}, seqs(got))
		got, err = log.Query(ctx, agents)
		require.NoError(t, err)
		require.Equal(t, []int64{1, 4, 8}, seqs(got))
		got, err = log.Query(ctx, eventlog.Filter{PayloadContains: []string{"FAIL", `\u0061`}})
		require.NoError(t, err)
		require.Equal(t, []int64{2, 3}, seqs(got), "case and escapes as stored")
		got, err = log.Query(ctx, eventlog.Filter{PayloadContains: []string{"fail"}, AfterSeq: 3, HostID: "h1"})
		require.NoError(t, err)
		require.Equal(t, []int64{4, 6, 7}, seqs(got))

		n, err := log.Count(ctx, agents)
		require.NoError(t, err)
		require.Equal(t, int64(3), n)

		var paged []eventlog.Event
		for page, err := range log.Pages(ctx, 0, &eventlog.ReadOptions{PageSize: 1, PayloadContains: markers}) {
			require.NoError(t, err)
			paged = append(paged, page...)
		}
		require.Equal(t, []int64{1, 4, 7, 8}, seqs(paged))
		paged = nil
		for page, err := range log.Pages(ctx, 1, &eventlog.ReadOptions{PageSize: 2, Kinds: agents.Kinds, PayloadContains: markers}) {
			require.NoError(t, err)
			paged = append(paged, page...)
		}
		require.Equal(t, []int64{4, 8}, seqs(paged))

		fl, err := log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{Filter: agents})
		require.NoError(t, err)
		// Polled until it has them: its horizon waits for every older
		// transaction on the server, other tests' included.
		followed := pollUntil(t, fl, 3)
		require.Equal(t, []int64{1, 4, 8}, seqs(followed))
	})
}
