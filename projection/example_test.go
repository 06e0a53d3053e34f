package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/projection"
)

// hostStatus keeps the last reported status of each host: an upsert, not
// an insert-only view. Concurrent appends may commit out of seq order
// (contract 8), so the upsert is guarded by seq — an older event never
// overwrites a newer one — and the view ends up the same whatever the
// commit order, and the same as a rebuild.
type hostStatus struct{}

func (hostStatus) Name() string           { return "host_status" }
func (hostStatus) Version() int           { return 1 }
func (hostStatus) Kinds() []eventlog.Kind { return []eventlog.Kind{eventlog.KindAgentEvent} }
func (hostStatus) Tables() []string       { return []string{"host_status"} }
func (hostStatus) Migrations() migrations.Set {
	return migrations.Set{Postgres: hostStatusSQL, SQLite: hostStatusSQL}
}
func (hostStatus) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM host_status`)
	return err
}

func (hostStatus) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	var p struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(ev.Payload, &p); err != nil || ev.HostID == "" || p.Status == "" {
		return nil // not a status report
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`
INSERT INTO host_status (host_id, status, event_log_seq) VALUES (?, ?, ?)
ON CONFLICT (host_id) DO UPDATE SET status = excluded.status, event_log_seq = excluded.event_log_seq
WHERE excluded.event_log_seq > host_status.event_log_seq`), ev.HostID, p.Status, ev.Seq)
	return err
}

// ApplyBatch applies a batch host by host in name order. Concurrent batches
// then lock host rows in the same order and cannot deadlock each other, as
// they could if each followed its own event order.
func (h hostStatus) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	sorted := slices.Clone(events)
	slices.SortStableFunc(sorted, func(a, b eventlog.Event) int { return strings.Compare(a.HostID, b.HostID) })
	for _, ev := range sorted { // per host still in seq order
		if err := h.Apply(ctx, tx, ev); err != nil {
			return projection.EventError(ev.Seq, err)
		}
	}
	return nil
}

var hostStatusSQL = fstest.MapFS{"00001_host_status.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE host_status (
    host_id       TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    event_log_seq BIGINT NOT NULL REFERENCES event_log (seq)
);
-- +goose Down
DROP TABLE host_status;
`)}}

func Example_lastStatusPerHost() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()

	reg := projection.Must(projection.NewRegistry(hostStatus{}))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		panic(err)
	}
	if _, err := projection.Migrate(ctx, log, reg); err != nil {
		panic(err)
	}

	report := func(host, status string) eventlog.Entry {
		return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host,
			Payload: json.RawMessage(`{"status":"` + status + `"}`)}
	}
	_, err = log.AppendBatch(ctx, []eventlog.Entry{
		report("web-1", "healthy"), report("web-2", "healthy"),
		report("web-1", "degraded"), report("web-2", "down"), report("web-2", "healthy"),
	})
	if err != nil {
		panic(err)
	}
	print := func() {
		var rows []struct {
			Host   string `db:"host_id"`
			Status string `db:"status"`
			Seq    int64  `db:"event_log_seq"`
		}
		if err := db.Select(&rows, `SELECT host_id, status, event_log_seq FROM host_status ORDER BY host_id`); err != nil {
			panic(err)
		}
		for _, r := range rows {
			fmt.Printf("%s %s (seq %d)\n", r.Host, r.Status, r.Seq)
		}
	}
	print()

	// The view is re-derivable from the log, and verifiably so.
	if _, err := projection.Rebuild(ctx, log, reg, nil); err != nil {
		panic(err)
	}
	print()
	res, err := projection.Verify(ctx, log, reg, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println("equal to a fresh derivation:", res[0].Equal)
	// Output:
	// web-1 degraded (seq 3)
	// web-2 healthy (seq 5)
	// web-1 degraded (seq 3)
	// web-2 healthy (seq 5)
	// equal to a fresh derivation: true
}

// ExampleManager assembles canonlog as a service and an operator binary
// do: one Manager per process, holding the database, the log and the
// registry. A process that does not register host_status refuses to
// append the kinds host_status consumes, rather than let that view miss
// the event.
func ExampleManager() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "canonlog-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	url := "sqlite:" + filepath.Join(dir, "service.db")

	// The service registers host_status and migrates on start.
	svc, err := projection.OpenManager(ctx, url, projection.Must(projection.NewRegistry(hostStatus{})), nil)
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	if _, err := svc.Migrate(ctx); err != nil {
		panic(err)
	}
	if _, err := svc.CheckStale(ctx, projection.StaleRefuse); err != nil {
		panic(err)
	}

	// Another binary on the same database, registering nothing.
	other, err := projection.OpenManager(ctx, url, projection.Must(projection.NewRegistry()), nil)
	if err != nil {
		panic(err)
	}
	defer other.Close()
	if err := other.Load(ctx); err != nil {
		panic(err)
	}
	_, err = other.Log().Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "web-1",
		Payload: json.RawMessage(`{"status":"healthy"}`)})
	fmt.Println(errors.Is(err, projection.ErrUnregistered))
	fmt.Println(err)
	_, err = other.Log().Append(ctx, eventlog.Entry{Kind: eventlog.KindEffect, Payload: json.RawMessage(`{}`)})
	fmt.Println("an effect:", err)

	sts, err := other.Status(ctx)
	if err != nil {
		panic(err)
	}
	for _, st := range sts {
		fmt.Printf("%s registered=%v kinds=%v\n", st.Name, st.Registered, st.Kinds)
	}
	// Output:
	// true
	// append of kind agent_event refused: projection host_status is recorded in this database as consuming that kind, and this binary does not register it, so the view would miss the event; append with the binary that registers it (such as the service owning it), or allow drift and then rebuild it with that binary
	// an effect: <nil>
	// host_status registered=false kinds=[agent_event]
}

// ExampleManager_Verify finds a view that differs from the log (a row
// changed behind canonlog's back) and repairs it with a rebuild.
func ExampleManager_Verify() {
	ctx := context.Background()
	svc, err := projection.OpenManager(ctx, "sqlite::memory:", projection.Must(projection.NewRegistry(hostStatus{})), nil)
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	if _, err := svc.Migrate(ctx); err != nil {
		panic(err)
	}
	for _, status := range []string{"healthy", "degraded"} {
		_, err := svc.Log().Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "web-1",
			Payload: json.RawMessage(`{"status":"` + status + `"}`)})
		if err != nil {
			panic(err)
		}
	}
	if _, err := svc.DB().ExecContext(ctx, `UPDATE host_status SET status = 'tampered'`); err != nil {
		panic(err)
	}

	res, err := svc.Verify(ctx, nil)
	if err != nil {
		panic(err)
	}
	if err := res.Err(); err != nil {
		fmt.Println(err) // a *DifferenceError, errors.Is(err, projection.ErrDifferent)
	}
	st, _ := res.Get("host_status")
	for _, s := range st.Samples {
		fmt.Println(s)
	}

	rebuilt, err := svc.Rebuild(ctx, &projection.RebuildOptions{
		Names:     []string{"host_status"}, // empty: all
		StaleOnly: false,                   // true: skip those that are not stale
		BatchSize: 2000,                    // events per page and per ApplyBatch
		Progress:  func(p projection.Progress) { fmt.Printf("%s: %d/%d events\n", p.Projection, p.Done, p.Total) },
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("rebuilt %s: %d events, %d rows, up to seq %d\n", rebuilt[0].Name, rebuilt[0].Events, rebuilt[0].Rows, rebuilt[0].Seq)
	res, err = svc.Verify(ctx, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println("after the rebuild:", res.Err())
	// Output:
	// projections differ from a fresh derivation of the log, rebuild them: host_status (1 missing, 1 extra)
	// missing host_status: (host_id="web-1", status="degraded", event_log_seq="2")
	// extra host_status: (host_id="web-1", status="tampered", event_log_seq="2")
	// host_status: 0/2 events
	// host_status: 2/2 events
	// rebuilt host_status: 2 events, 1 rows, up to seq 2
	// after the rebuild: <nil>
}

// hostReports keeps one row per status report, keyed by its seq, with the
// time of the report. Times are stored as event_log stores ts: TIMESTAMPTZ
// on PostgreSQL, fixed-width text on SQLite (see the migrations), so they
// round-trip to the microsecond and sort in time order on both backends.
type hostReports struct{}

func (hostReports) Name() string           { return "host_reports" }
func (hostReports) Version() int           { return 1 }
func (hostReports) Kinds() []eventlog.Kind { return []eventlog.Kind{eventlog.KindAgentEvent} }
func (hostReports) Tables() []string       { return []string{"host_reports"} }
func (hostReports) Migrations() migrations.Set {
	return migrations.Set{Postgres: hostReportsPostgres, SQLite: hostReportsSQLite}
}
func (hostReports) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM host_reports`)
	return err
}

func (hostReports) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	if ev.HostID == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO host_reports (host_id, reported_at, event_log_seq) VALUES (?, ?, ?)`),
		ev.HostID, eventlog.FormatTime(ev.TS), ev.Seq)
	return err
}

// ApplyBatch inserts a batch with one statement on PostgreSQL, each column
// bound as an array to unnest. SQLite has no arrays: there it inserts row
// by row.
func (h hostReports) ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
	b, err := eventlog.BackendOf(tx) // eventlog.Postgres or eventlog.SQLite
	if err != nil {
		return err
	}
	if b == eventlog.Postgres {
		hosts, times, seqs := pq.StringArray{}, pq.StringArray{}, pq.Int64Array{}
		for _, ev := range events {
			if ev.HostID != "" {
				hosts, times, seqs = append(hosts, ev.HostID), append(times, eventlog.FormatTime(ev.TS)), append(seqs, ev.Seq)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO host_reports (host_id, reported_at, event_log_seq)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[])`, hosts, times, seqs)
		return err
	}
	for _, ev := range events {
		if err := h.Apply(ctx, tx, ev); err != nil {
			return projection.EventError(ev.Seq, err)
		}
	}
	return nil
}

var (
	hostReportsPostgres = fstest.MapFS{"00001_host_reports.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE host_reports (
    event_log_seq BIGINT PRIMARY KEY REFERENCES event_log (seq),
    host_id       TEXT NOT NULL,
    reported_at   TIMESTAMPTZ NOT NULL
);
-- +goose Down
DROP TABLE host_reports;
`)}}
	hostReportsSQLite = fstest.MapFS{"00001_host_reports.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE host_reports (
    event_log_seq INTEGER PRIMARY KEY REFERENCES event_log (seq),
    host_id       TEXT NOT NULL,
    reported_at   TEXT NOT NULL CHECK (length(reported_at) = 27)
);
-- +goose Down
DROP TABLE host_reports;
`)}}
)

// lastReport returns the time of host's latest report: the latest in
// time, whatever order the reports were appended in.
func lastReport(ctx context.Context, db *sqlx.DB, host string) (time.Time, error) {
	var at time.Time
	err := db.QueryRowxContext(ctx, db.Rebind(`SELECT reported_at FROM host_reports WHERE host_id = ? ORDER BY reported_at DESC LIMIT 1`), host).
		Scan(eventlog.ScanTime(&at))
	return at, err
}

// Times in a projection: stored to the microsecond, sorted in time order.
func Example_times() {
	ctx := context.Background()
	svc, err := projection.OpenManager(ctx, "sqlite::memory:", projection.Must(projection.NewRegistry(hostReports{})), nil)
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	if _, err := svc.Migrate(ctx); err != nil {
		panic(err)
	}
	report := func(ts time.Time) eventlog.Entry {
		return eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "web-1", TS: ts, Payload: json.RawMessage(`{}`)}
	}
	reported := time.Date(2026, 5, 16, 3, 0, 0, 123456789, time.FixedZone("UTC+2", 2*3600))
	_, err = svc.Log().AppendBatch(ctx, []eventlog.Entry{report(reported), report(reported.Add(-time.Hour))}) // the second one arrives late
	if err != nil {
		panic(err)
	}
	at, err := lastReport(ctx, svc.DB(), "web-1")
	if err != nil {
		panic(err)
	}
	fmt.Println(at.Format(time.RFC3339Nano))
	fmt.Println(at.Equal(eventlog.NormalizeTime(reported)))
	// Output:
	// 2026-05-16T01:00:00.123456Z
	// true
}
