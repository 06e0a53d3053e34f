package peers

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/canonlog/canonlog/internal/dbtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tinyConfig runs every scenario at a size that takes a few seconds;
// BatchEvents and ReplayEvents are not multiples of BatchSize, so the
// rounding up and the last, shorter batch of the fill are exercised.
func tinyConfig(url string) *Config {
	return &Config{
		DatabaseURL:      url,
		SchemaPrefix:     "canonlog_test_peers",
		Rounds:           3,
		SingleEvents:     12,
		ConcurrentEvents: 30,
		Clients:          3,
		BatchEvents:      110,
		BatchSize:        50,
		ReplayEvents:     130,
	}
}

// postgresURL returns the test server's URL, or skips the test when the
// server is unreachable (fails it under CANONLOG_REQUIRE_POSTGRES=1).
func postgresURL(t *testing.T) string {
	t.Helper()
	url := dbtest.PostgresURL()
	db, err := sql.Open("postgres", url)
	require.NoError(t, err)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		if dbtest.RequirePostgres() {
			t.Fatalf("PostgreSQL required (CANONLOG_REQUIRE_POSTGRES=1) but unreachable: %v", err)
		}
		t.Skipf("PostgreSQL unreachable, skipping (set TEST_DATABASE_URL): %v", err)
	}
	return url
}

// schemasLeft returns the schemas whose names begin with prefix.
func schemasLeft(t *testing.T, url, prefix string) []string {
	t.Helper()
	db, err := sql.Open("postgres", url)
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1`, prefix)
	require.NoError(t, err)
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		names = append(names, n)
	}
	require.NoError(t, rows.Err())
	return names
}

// TestRun runs every scenario on every contender at a tiny size and
// checks that each side wrote, stored and read back what it was given
// (the run itself refuses a store that holds a different number of
// events, or a replay that reads back a different number or different
// payload bytes), that every round was timed, and that the run's schemas
// are gone afterwards.
func TestRun(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testRun(t, false, 0) })
	// With event ids every event still lands once: no two calls share an
	// id, so none is taken for a duplicate.
	t.Run("event ids", func(t *testing.T) { testRun(t, true, 0) })
	// Through the latency proxy every side still stores what it was
	// given, and the report says what a round trip cost.
	t.Run("latency", func(t *testing.T) { testRun(t, false, time.Millisecond) })
}

func testRun(t *testing.T, eventIDs bool, latency time.Duration) {
	url := postgresURL(t)
	cfg := tinyConfig(url)
	cfg.EventIDs = eventIDs
	cfg.Latency = latency
	r, err := New(cfg)
	require.NoError(t, err)
	var progress bytes.Buffer
	r.cfg.Progress = &progress
	rep, err := r.Run(t.Context())
	require.NoError(t, err)

	c := r.Config()
	require.Equal(t, 150, c.BatchEvents, "rounded up to a multiple of BatchSize")
	want := map[string]int64{
		"single append, 1 client":  4 + 3*12,
		"single append, 3 clients": 4*3 + 3*30,
		"batch of 50 per call":     50 + 3*150,
		"full replay":              130,
	}
	require.Len(t, rep.Scenarios, len(want))
	for _, res := range rep.Scenarios {
		require.Contains(t, want, res.Name)
		require.Len(t, res.Sides, 4, res.Name)
		for _, s := range res.Sides {
			if s.Name == Hallgren {
				require.NotEmpty(t, s.Unavailable)
				require.Empty(t, s.Runs)
				continue
			}
			require.Empty(t, s.Unavailable, "%s: %s", res.Name, s.Name)
			require.Equal(t, want[res.Name], s.Stored, "%s: %s", res.Name, s.Name)
			require.Len(t, s.Runs, 3, "%s: %s", res.Name, s.Name)
			for _, rate := range s.Runs {
				require.Positive(t, rate, "%s: %s", res.Name, s.Name)
			}
			require.Positive(t, s.Median)
			if s.Name == Canonlog {
				require.Zero(t, s.Ratio)
			} else {
				require.Positive(t, s.Ratio, "%s: canonlog ÷ %s", res.Name, s.Name)
			}
		}
	}
	require.Contains(t, progress.String(), "full replay: round 3/3: ")
	require.Empty(t, schemasLeft(t, url, rep.Schemas+"_"))

	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	require.Contains(t, table.String(), "| full replay | ")
	if eventIDs {
		require.Contains(t, table.String(), "canonlog: every event with an event id")
	}
	if latency > 0 {
		require.Positive(t, rep.RoundTrip)
		require.Contains(t, table.String(), "Every side connected through a proxy holding each message 1ms in each direction: a round trip (SELECT 1) took ")
	} else {
		require.Zero(t, rep.RoundTrip)
		require.NotContains(t, table.String(), "Every side connected through")
	}
}

// canonlog's entries carry an event id, distinct per event, only when
// asked.
func TestCanonlogEntries(t *testing.T) {
	plain := (&canonlogStore{}).entry(7)
	require.Empty(t, plain.EventID)
	s := &canonlogStore{eventIDs: true}
	require.Equal(t, "peers-7", s.entry(7).EventID)
	require.NotEqual(t, s.entry(7).EventID, s.entry(8).EventID)
	require.Equal(t, plain.Payload, s.entry(7).Payload)
}

// lossyStore is a raw store that stores only the first event of every
// batch and drops every single append.
type lossyStore struct{ rawStore }

func (s *lossyStore) appendOne(context.Context, int) error { return nil }

func (s *lossyStore) appendBatch(ctx context.Context, first, _ int) error {
	return s.rawStore.appendBatch(ctx, first, 1)
}

// forgetfulStore is a raw store whose replay stops one event short.
type forgetfulStore struct{ rawStore }

func (s *forgetfulStore) replay(ctx context.Context, want int64) (events, payloadBytes int64, err error) {
	events, payloadBytes, err = s.rawStore.replay(ctx, want)
	return events - 1, payloadBytes - int64(len(payload(0))), err
}

// TestRunRefusesWhatMeasuresNothing: a side whose writes do not land, or
// whose replay does not read everything back, is an error of the run, not
// a fast figure; its schemas are dropped all the same.
func TestRunRefusesWhatMeasuresNothing(t *testing.T) {
	url := postgresURL(t)
	for name, tc := range map[string]struct {
		s    func() store
		want string
	}{
		"lossy":     {func() store { return &lossyStore{} }, "single append, 1 client: lossy: the store holds 0 events, want 40"},
		"forgetful": {func() store { return &forgetfulStore{} }, "full replay: forgetful: round 1: replay read 129 events with 34"},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := New(tinyConfig(url))
			require.NoError(t, err)
			r.contenders = []contender{
				{name: Canonlog, newStore: func() store { return &canonlogStore{} }},
				{name: name, newStore: tc.s},
			}
			rep, err := r.Run(t.Context())
			require.Nil(t, rep)
			require.ErrorContains(t, err, tc.want)
			require.Empty(t, schemasLeft(t, url, "canonlog_test_peers_"), "assumes no other run of this test uses the server at once")
		})
	}
}

// cancelOnWrite cancels a context at its first write.
type cancelOnWrite context.CancelFunc

func (c cancelOnWrite) Write(p []byte) (int, error) {
	c()
	return len(p), nil
}

// TestRunCancelled: a run cancelled in the middle of a scenario (after
// its first timed turn, with every side's store open) returns an error
// and leaves no schema behind.
func TestRunCancelled(t *testing.T) {
	url := postgresURL(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfg := tinyConfig(url)
	cfg.Progress = cancelOnWrite(cancel)
	r, err := New(cfg)
	require.NoError(t, err)
	_, err = r.Run(ctx)
	require.ErrorContains(t, err, "peers: single append, 1 client: ")
	require.ErrorContains(t, err, "round 1: ")
	require.Empty(t, schemasLeft(t, url, "canonlog_test_peers_"), "assumes no other run of this test uses the server at once")
}

func TestNew(t *testing.T) {
	t.Parallel()
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		r, err := New(nil)
		require.NoError(t, err)
		c := r.Config()
		require.Equal(t, DefaultDatabaseURL, c.DatabaseURL)
		require.Equal(t, DefaultSchemaPrefix, c.SchemaPrefix)
		require.Equal(t, DefaultRounds, c.Rounds)
		require.Equal(t, DefaultSingleEvents, c.SingleEvents)
		require.Equal(t, DefaultConcurrentEvents, c.ConcurrentEvents)
		require.Equal(t, DefaultClients, c.Clients)
		require.Equal(t, DefaultBatchEvents, c.BatchEvents)
		require.Equal(t, DefaultBatchSize, c.BatchSize)
		require.Equal(t, DefaultReplayEvents, c.ReplayEvents)
	})
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"sqlite":              {Config{DatabaseURL: "sqlite:x.db"}, "the peers are compared on PostgreSQL only"},
		"negative rounds":     {Config{Rounds: -1}, "Config.Rounds is -1: use a positive number, or 0 for the default of 3"},
		"too many clients":    {Config{Clients: MaxClients + 1}, "Config.Clients is 65: at most 64"},
		"batch too large":     {Config{BatchSize: MaxBatchSize + 1}, "Config.BatchSize is 20001: at most 20000"},
		"too few per client":  {Config{Clients: 8, ConcurrentEvents: 7}, "give each of the 8 clients at least one event"},
		"negative replay":     {Config{ReplayEvents: -5}, "Config.ReplayEvents is -5"},
		"password not echoed": {Config{DatabaseURL: "mysql://u:secret@h/db"}, "database URL mysql://u:xxxxx@h/db"},
		"negative latency":    {Config{Latency: -time.Millisecond}, "Config.Latency is -1ms: between 0 (none) and 1s"},
		"latency too long":    {Config{Latency: 2 * time.Second}, "Config.Latency is 2s: between 0 (none) and 1s"},
		"latency needs host":  {Config{Latency: time.Millisecond, DatabaseURL: "postgres://u:secret@/db?host=/run/postgresql"}, "-latency needs a host in the URL"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := New(&tc.cfg)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "secret")
		})
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	rep := &Report{
		Config: Config{Rounds: 3, SingleEvents: 2000, ConcurrentEvents: 8000, Clients: 8, BatchEvents: 100000, BatchSize: 500, ReplayEvents: 100000},
		Contenders: []Contender{
			{Name: Raw, Module: "github.com/lib/pq"},
			{Name: Canonlog, Module: "github.com/canonlog/canonlog"},
			{Name: Hallgren, Module: "example.com/hallgren", Unavailable: "not served"},
			{Name: Watermill, Module: "example.com/watermill"},
		},
		Scenarios: []Result{{Name: "full replay", PerRound: 100000, Sides: []SideResult{
			{Name: Raw, Runs: []float64{1000, 3000, 2000}, Median: 2000, Ratio: 1.5},
			{Name: Canonlog, Runs: []float64{3000, 3000, 3100}, Median: 3000},
			{Name: Hallgren, Unavailable: "not served"},
			{Name: Watermill, Runs: []float64{1234567.4, 2, 3}, Median: 3, Ratio: 1000},
		}}},
		Server:     "15.20",
		Versions:   map[string]string{"go": "go1.26.8", "github.com/lib/pq": "v1.12.3", "example.com/watermill": "v4.1.2"},
		LoadBefore: "1.00 2.00 3.00",
		Elapsed:    95 * time.Second,
	}
	var buf bytes.Buffer
	require.NoError(t, rep.WriteTable(&buf))
	require.Equal(t, `| scenario (events/s) | raw lib/pq | canonlog | hallgren/eventsourcing | watermill-sql | canonlog ÷ raw | canonlog ÷ hallgren | canonlog ÷ watermill-sql |
|---|---:|---:|---:|---:|---:|---:|---:|
| full replay | 2,000 | 3,000 | n/a | 3 | 1.50x | n/a | 1000.00x |

Medians of 3 rounds per side; the sides take turns in an order that rotates each round. A ratio is the median of the per-round ratios.
Per side and round: 2,000 events from 1 client and 8,000 from 8 clients, one call per event; 100,000 events in calls of 500; a replay of a log of 100,000 events.
raw lib/pq: canonlog's event_log table by hand; a prepared INSERT in a transaction per event, COPY of 500 rows per transaction, keyset SELECT in pages of 2,000.
n/a (hallgren/eventsourcing): not served.

Rounds (events/s):
- full replay: raw lib/pq 1,000 3,000 2,000; canonlog 3,000 3,000 3,100; watermill-sql 1,234,567 2 3

PostgreSQL 15.20; go1.26.8; github.com/lib/pq v1.12.3; example.com/watermill v4.1.2.
Load average at the start: 1.00 2.00 3.00; at the end: unknown. Took 1m35s.
`, buf.String())
}

func TestThousands(t *testing.T) {
	t.Parallel()
	for x, want := range map[float64]string{0: "0", 7.4: "7", 999.5: "1,000", 1234: "1,234", 123456: "123,456", 1234567.8: "1,234,568", -4567: "-4,567"} {
		require.Equal(t, want, thousands(x), "%v", x)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	require.Zero(t, median(nil))
	xs := []float64{3, 1}
	median(xs)
	require.Equal(t, []float64{3, 1}, xs, "median sorts a copy")
}

// TestPayloads: every payload is JSON of about 260 bytes.
func TestPayloads(t *testing.T) {
	t.Parallel()
	for i := range payloadVariants {
		p := payload(i)
		require.True(t, json.Valid(p), "%s", p)
		require.GreaterOrEqual(t, len(p), 250, "%s", p)
		require.LessOrEqual(t, len(p), 275, "%s", p)
	}
	require.Equal(t, int64(len(payload(0))+len(payload(1))), payloadBytes(0, 2))
}
