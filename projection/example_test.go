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

	"github.com/jmoiron/sqlx"

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
