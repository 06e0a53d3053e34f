package canonlogcli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing/fstest"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/cmd/canonlog/canonlogcli"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// fleetHosts is a service's own projection: each host that reported,
// with the seq of its last event. An upsert guarded by seq, so that the
// live view equals a rebuild whatever order concurrent appends commit in.
type fleetHosts struct{}

func (fleetHosts) Name() string           { return "fleet_hosts" }
func (fleetHosts) Version() int           { return 1 }
func (fleetHosts) Kinds() []eventlog.Kind { return []eventlog.Kind{eventlog.KindAgentEvent} }
func (fleetHosts) Tables() []string       { return []string{"fleet_hosts"} }
func (fleetHosts) Migrations() migrations.Set {
	return migrations.Set{Postgres: fleetHostsSQL, SQLite: fleetHostsSQL}
}

func (fleetHosts) Reset(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM fleet_hosts`)
	return err
}

func (fleetHosts) Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error {
	if ev.HostID == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`
INSERT INTO fleet_hosts (host_id, event_log_seq) VALUES (?, ?)
ON CONFLICT (host_id) DO UPDATE SET event_log_seq = excluded.event_log_seq
WHERE excluded.event_log_seq > fleet_hosts.event_log_seq`), ev.HostID, ev.Seq)
	return err
}

var fleetHostsSQL = fstest.MapFS{"00001_fleet_hosts.sql": {Data: []byte(`
-- +goose Up
CREATE TABLE fleet_hosts (
    host_id       TEXT PRIMARY KEY,
    event_log_seq BIGINT NOT NULL REFERENCES event_log (seq)
);
-- +goose Down
DROP TABLE fleet_hosts;
`)}}

// version is a release number set at build time, in a main package with
// go build -ldflags "-X main.version=v2.1.0".
var version string

// The whole main function of a service's operator binary: canonlog's
// commands, with the service's projections and its name.
func ExampleMain() {
	canonlogcli.Main(&canonlogcli.Config{
		Name:        "fleetctl", // in usage lines, messages, hints and help
		Projections: []projection.Projection{probefailures.New(), fleetHosts{}},
		Version:     version, // optional: a release number set at build time
	})
}

// A service's operator binary, fleetctl, keeps the service's projection
// fleet_hosts next to probe_failures, and operates both. The stock
// canonlog command (a nil Config) on the same database reads the log, but
// refuses to append a kind that fleet_hosts consumes, since the view would
// miss the event, and cannot rebuild fleet_hosts or roll back its
// migrations.
func ExampleRun() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "canonlogcli-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	database := "--database-url=sqlite:" + filepath.Join(dir, "fleet.db")

	// run runs a command line on the database, prints the command and its
	// exit code, and returns what it printed.
	run := func(cfg *canonlogcli.Config, args ...string) (stdout, stderr string) {
		var out, errOut strings.Builder
		code := canonlogcli.Run(ctx, cfg, append(args, database), strings.NewReader(""), &out, &errOut)
		name := "canonlog"
		if cfg != nil {
			name = cfg.Name
		}
		fmt.Printf("$ %s %s: exit %d\n", name, strings.Join(args, " "), code)
		return out.String(), errOut.String()
	}

	fleetctl := &canonlogcli.Config{
		Name:        "fleetctl",
		Projections: []projection.Projection{probefailures.New(), fleetHosts{}},
	}
	run(fleetctl, "migrate", "up") // prints what it applied, with durations
	out, _ := run(fleetctl, "append", "--kind", "agent_event", "--host", "web-1", "--ts", "2026-05-16T01:00:00Z", "--payload", `{"type":"Heartbeat"}`)
	fmt.Print(out)
	out, _ = run(fleetctl, "rebuild", "fleet_hosts", "--progress", "none")
	summary, _, _ := strings.Cut(out, ", in ") // then how long it took
	fmt.Println(summary)
	out, _ = run(fleetctl, "verify")
	fmt.Print(out)

	out, _ = run(nil, "query", "--kind", "agent_event", "-o", "ndjson")
	fmt.Print(out)
	_, errOut := run(nil, "append", "--kind", "agent_event", "--host", "web-2", "--payload", `{"type":"Heartbeat"}`)
	fmt.Print(errOut)
	out, _ = run(nil, "append", "--kind", "effect", "--payload", `{}`)
	fmt.Print(out)
	_, errOut = run(nil, "rebuild", "fleet_hosts")
	fmt.Print(errOut)
	_, errOut = run(nil, "migrate", "down", "--yes")
	fmt.Print(errOut)
	// Output:
	// $ fleetctl migrate up: exit 0
	// $ fleetctl append --kind agent_event --host web-1 --ts 2026-05-16T01:00:00Z --payload {"type":"Heartbeat"}: exit 0
	// seq 1
	// $ fleetctl rebuild fleet_hosts --progress none: exit 0
	// rebuilt fleet_hosts (version 1) online: 1 event replayed, 1 row, up to seq 1
	// $ fleetctl verify: exit 0
	// fleet_hosts: equal to a fresh derivation (1 event replayed)
	// probe_failures: equal to a fresh derivation (0 events replayed)
	// $ canonlog query --kind agent_event -o ndjson: exit 0
	// {"seq":1,"ts":"2026-05-16T01:00:00Z","kind":"agent_event","host_id":"web-1","payload":{"type":"Heartbeat"}}
	// $ canonlog append --kind agent_event --host web-2 --payload {"type":"Heartbeat"}: exit 1
	// canonlog: append: append of kind agent_event refused: projection fleet_hosts is recorded in this database as consuming that kind, and this binary does not register it, so the view would miss the event; append with the binary that registers it (such as the service owning it), or allow drift and then rebuild it with that binary (--allow-drift)
	// $ canonlog append --kind effect --payload {}: exit 0
	// seq 2
	// $ canonlog rebuild fleet_hosts: exit 2
	// canonlog: rebuild: projection fleet_hosts is registered by another binary, not this one: run rebuild with the binary that registers it (such as the service's own operator command)
	// Run 'canonlog rebuild --help' for usage.
	// $ canonlog migrate down --yes: exit 1
	// canonlog: migrate down: migrations: down refused, nothing was rolled back: the database holds migration sets that were not given: fleet_hosts (version tables canonlog_migrations_fleet_hosts); roll them back first with the program that registers them (its migrate down), or drop their tables and version tables by hand; canonlog registers only probe_failures; then run 'canonlog migrate down --yes' again
}
