// Package eventlogtest helps applications test code that uses canonlog,
// with nothing installed: each helper gives a test its own in-memory SQLite
// log, migrated, and closed when the test ends; FakeClock makes the
// timestamps of its entries deterministic.
//
//	func TestCheckout(t *testing.T) {
//		log := eventlogtest.NewLog(t, nil)
//		svc := checkout.New(log)
//		…
//	}
package eventlogtest

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
)

// Epoch is the time NewClock starts at: a fixed instant, so tests that print
// timestamps are deterministic.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// NewDB returns a private in-memory SQLite database with canonlog's core
// migrations and the given sets applied. It is closed when t ends. The
// database has a single connection: do not query it outside a transaction
// you hold open.
func NewDB(t testing.TB, sets ...migrations.Set) *sqlx.DB {
	t.Helper()
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		t.Fatalf("eventlogtest: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := migrations.Up(ctx, db, sets...); err != nil {
		t.Fatalf("eventlogtest: %v", err)
	}
	return db
}

// NewLog returns a log on a fresh NewDB. A nil cfg, or one without a Clock,
// gets a FakeClock starting at Epoch and advancing one millisecond per
// entry.
func NewLog(t testing.TB, cfg *eventlog.Config) *eventlog.Log {
	t.Helper()
	var c eventlog.Config
	if cfg != nil {
		c = *cfg
	}
	if c.Clock == nil {
		c.Clock = NewClock()
	}
	log, err := eventlog.New(NewDB(t), &c)
	if err != nil {
		t.Fatalf("eventlogtest: %v", err)
	}
	t.Cleanup(func() { _ = log.Close() })
	return log
}

// NewClock returns a FakeClock at Epoch that advances one millisecond each
// time it is read.
func NewClock() *FakeClock {
	c := NewFakeClock(Epoch)
	c.SetStep(time.Millisecond)
	return c
}
