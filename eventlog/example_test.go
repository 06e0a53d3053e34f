package eventlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/eventlogtest"
	"github.com/canonlog/canonlog/migrations"
)

func Example() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		panic(err)
	}
	clock := eventlogtest.NewFakeClock(time.Date(2026, 5, 16, 1, 0, 0, 0, time.UTC))
	log, err := eventlog.New(db, &eventlog.Config{Clock: clock})
	if err != nil {
		panic(err)
	}

	e := eventlog.Entry{
		Kind:      eventlog.KindAgentEvent,
		HostID:    "host-1",
		RolloutID: "rollout-7",
		Payload:   json.RawMessage(`{"type": "Heartbeat"}`),
		EventID:   "host-1/1",
	}
	first, _ := log.Append(ctx, e)
	retry, _ := log.Append(ctx, e) // a retry lands nothing new
	fmt.Println(first.Event.Seq, first.Duplicate, first.Event.TS.Format(time.RFC3339))
	fmt.Println(retry.Event.Seq, retry.Duplicate)

	events, _ := log.Query(ctx, eventlog.Filter{HostID: "host-1"})
	fmt.Println(len(events), string(events[0].Payload))
	// Output:
	// 1 false 2026-05-16T01:00:00Z
	// 1 true
	// 1 {"type": "Heartbeat"}
}
