package projection_test

// BenchmarkDispatch measures what registering a projection costs a single
// append: the same Log.Append from one client with no hook ("none") and
// with a Registry holding one projection that derives nothing ("noop"), so
// the difference is dispatch alone. On PostgreSQL that is the projection's
// shared advisory lock, which the log takes inside its INSERT statement
// (eventlog.LockingHook), so it adds no round trip; before that design the
// lock was a statement of its own and noop ran at 0.63-0.74x none.
//
// "interleaved" runs one append on each side per iteration, rotating which
// goes first, each side on a fresh database of its own, and reports each
// side's events/s and the ratio noop/none, measured under the same noise.
// Reproduce with:
//
//	go test ./projection/ -run '^$' -bench 'Dispatch/(postgres|sqlite)/interleaved' -benchtime 4s -count 6

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/projection"
)

// noopProjection derives nothing, for every kind: what it costs is the
// dispatch around it.
type noopProjection struct{}

func (noopProjection) Name() string                                          { return "noop" }
func (noopProjection) Version() int                                          { return 1 }
func (noopProjection) Apply(context.Context, *sqlx.Tx, eventlog.Event) error { return nil }
func (noopProjection) Reset(context.Context, *sqlx.Tx) error                 { return nil }

var dispatchSides = []string{"none", "noop"}

// dispatchWarmupBase numbers warm-up entries so their event ids never
// collide with measured ones.
const dispatchWarmupBase = 1 << 40

var dispatchTS0 = time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC)

// dispatchPayloads are probe results of about 300 bytes, built once.
var dispatchPayloads = func() []json.RawMessage {
	out := make([]json.RawMessage, 64)
	for i := range out {
		out[i] = json.RawMessage(fmt.Sprintf(`{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh-hardening","observed_at":"2026-05-16T01:00:%02dZ","sub_results":[`+
			`{"control_id":"CIS-5.2.%d","framework":"cis","status":"fail"},{"control_id":"CIS-5.2.%d","framework":"cis","status":"pass"},`+
			`{"control_id":"NIST-AC-%d","framework":"nist","status":"pass"}]}`, i%60, i%30, (i+7)%30, i%25))
	}
	return out
}()

func dispatchEntry(i int) eventlog.Entry {
	return eventlog.Entry{
		Kind:      eventlog.KindAgentEvent,
		TS:        dispatchTS0.Add(time.Duration(i) * time.Millisecond),
		HostID:    "host-" + strconv.Itoa(i%5000) + ".eu-west-1.fleet.internal",
		RolloutID: "rollout-2026-05-16-" + strconv.Itoa(i/1000%8),
		Payload:   dispatchPayloads[i%len(dispatchPayloads)],
		EventID:   "evt-" + strconv.Itoa(i),
	}
}

// newDispatchLog returns a log for side on a fresh migrated database of
// backend. On PostgreSQL it checks that the side takes the projection lock
// exactly when it should, then forces a checkpoint so that no side pays
// for another's dirty buffers.
func newDispatchLog(b *testing.B, backend, side string) *eventlog.Log {
	b.Helper()
	ctx := context.Background()
	db := dbtest.New(b, backend).Migrated(b)
	var hook eventlog.Hook
	if side == "noop" {
		hook = projection.Must(projection.NewRegistry(noopProjection{}))
	}
	log, err := eventlog.New(db, &eventlog.Config{Hook: hook})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = log.Close() })
	if backend == "postgres" {
		want := side == "noop"
		if got := takesSharedLock(b, log); got != want {
			b.Fatalf("side %s: takes the shared projection lock = %v, want %v", side, got, want)
		}
		_, _ = db.ExecContext(ctx, `CHECKPOINT`) // best effort: the privilege may be missing
	}
	return log
}

// takesSharedLock reports whether an append on log holds the "noop"
// projection's advisory lock in shared mode before it commits.
func takesSharedLock(b *testing.B, log *eventlog.Log) bool {
	b.Helper()
	return heldAfter(b, log.DB(), func(ctx context.Context, tx *sqlx.Tx) error {
		_, err := log.AppendTx(ctx, tx, dispatchEntry(dispatchWarmupBase-1))
		return err
	})
}

// heldAfter runs appendTx in a transaction on db, reports whether the
// transaction then holds the "noop" projection's lock in shared mode, and
// rolls back.
func heldAfter(b *testing.B, db *sqlx.DB, appendTx func(context.Context, *sqlx.Tx) error) bool {
	b.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := appendTx(ctx, tx); err != nil {
		b.Fatal(err)
	}
	var held bool
	err = tx.GetContext(ctx, &held, `SELECT EXISTS (
	SELECT 1 FROM pg_locks, (SELECT hashtextextended(current_schema() || ':' || 'canonlog:projection:noop', 0) AS k) AS key
	WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted AND pid = pg_backend_pid()
	  AND classid::bigint = (key.k >> 32) & 4294967295 AND objid::bigint = key.k & 4294967295)`)
	if err != nil {
		b.Fatal(err)
	}
	return held
}

func BenchmarkDispatch(b *testing.B) {
	for _, backend := range []string{"postgres", "sqlite"} {
		b.Run(backend, func(b *testing.B) {
			for _, side := range dispatchSides {
				b.Run(side, func(b *testing.B) {
					benchDispatchOne(b, logAppender(newDispatchLog(b, backend, side)))
				})
			}
			b.Run("interleaved", func(b *testing.B) {
				ops := make([]func(context.Context, int) error, len(dispatchSides))
				for i, side := range dispatchSides {
					ops[i] = logAppender(newDispatchLog(b, backend, side))
				}
				benchDispatchInterleaved(b, dispatchSides, ops)
			})
		})
	}
}

func logAppender(log *eventlog.Log) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		_, err := log.Append(ctx, dispatchEntry(i))
		return err
	}
}

func warmUpDispatch(b *testing.B, op func(context.Context, int) error) {
	b.Helper()
	for i := range 20 {
		if err := op(context.Background(), dispatchWarmupBase+i); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDispatchOne times single appends.
func benchDispatchOne(b *testing.B, op func(context.Context, int) error) {
	ctx := context.Background()
	warmUpDispatch(b, op)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := op(ctx, i); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// benchDispatchInterleaved appends one event with each op per iteration,
// rotating the order, times each op apart and reports each side's rate
// and its ratio to the first side's.
func benchDispatchInterleaved(b *testing.B, sides []string, ops []func(context.Context, int) error) {
	ctx := context.Background()
	for _, op := range ops {
		warmUpDispatch(b, op)
	}
	elapsed := make([]time.Duration, len(ops))
	i := 0
	for b.Loop() {
		for k := range ops {
			j := (i + k) % len(ops)
			start := time.Now()
			if err := ops[j](ctx, i); err != nil {
				b.Fatal(err)
			}
			elapsed[j] += time.Since(start)
		}
		i++
	}
	for j, side := range sides {
		b.ReportMetric(float64(i)/elapsed[j].Seconds(), side+"_events/s")
		if j > 0 {
			b.ReportMetric(elapsed[0].Seconds()/elapsed[j].Seconds(), side+"/"+sides[0])
		}
	}
}

// deployView consumes deploy_step only: installed by "another binary" in
// BenchmarkGuard.
type deployView struct{ noopProjection }

func (deployView) Name() string           { return "deploy_view" }
func (deployView) Kinds() []eventlog.Kind { return []eventlog.Kind{"deploy_step"} }

var guardSides = []string{"registry", "manager", "manager_foreign"}

// BenchmarkGuard measures what assembling through projection.Manager costs
// a single append, against the same log with the registry as its hook
// ("registry"): "manager" guards appends against projections of other
// binaries while the database records none, "manager_foreign" while it
// records one (consuming another kind, so the append goes through). Each
// side registers the noop projection on a fresh database of its own;
// "interleaved" reports the ratios measured under the same noise.
// Reproduce with:
//
//	go test ./projection/ -run '^$' -bench 'Guard/(postgres|sqlite)/interleaved' -benchtime 4s -count 6
func BenchmarkGuard(b *testing.B) {
	for _, backend := range []string{"postgres", "sqlite"} {
		b.Run(backend, func(b *testing.B) {
			b.Run("interleaved", func(b *testing.B) {
				ops := make([]func(context.Context, int) error, len(guardSides))
				for i, side := range guardSides {
					ops[i] = logAppender(newGuardLog(b, backend, side))
				}
				benchDispatchInterleaved(b, guardSides, ops)
			})
		})
	}
}

func newGuardLog(b *testing.B, backend, side string) *eventlog.Log {
	b.Helper()
	ctx := context.Background()
	db := dbtest.New(b, backend).Migrated(b)
	if side == "registry" {
		reg := projection.Must(projection.NewRegistry(noopProjection{}))
		log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = log.Close() })
		if _, err := projection.Migrate(ctx, log, reg); err != nil {
			b.Fatal(err)
		}
		return log
	}
	if side == "manager_foreign" {
		other, err := projection.NewManager(db, projection.Must(projection.NewRegistry(deployView{})), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := other.Migrate(ctx); err != nil {
			b.Fatal(err)
		}
		_ = other.Close()
	}
	m, err := projection.NewManager(db, projection.Must(projection.NewRegistry(noopProjection{})), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	if _, err := m.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	sts, err := m.Status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if got, want := len(sts.Unregistered()), map[string]int{"manager": 0, "manager_foreign": 1}[side]; got != want {
		b.Fatalf("side %s: %d unregistered projections, want %d", side, got, want)
	}
	return m.Log()
}
