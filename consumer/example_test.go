package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
)

// A consumer of gate decisions that tells the outside world about each
// one, at least once: the seq is the idempotency key downstream.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		panic(err)
	}
	log, err := eventlog.New(db, nil)
	if err != nil {
		panic(err)
	}
	for _, verdict := range []string{"pass", "fail", "pass"} {
		if _, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindGateDecision, RolloutID: "r1",
			Payload: json.RawMessage(`{"verdict":"` + verdict + `"}`)}); err != nil {
			panic(err)
		}
	}

	alerts, err := consumer.New(log, &consumer.Config{
		Name:  "gate_alerts",
		Kinds: []eventlog.Kind{eventlog.KindGateDecision},
		Handle: func(ctx context.Context, ev eventlog.Event) error {
			fmt.Printf("notify: gate decision %d for %s: %s\n", ev.Seq, ev.RolloutID, ev.Payload)
			if ev.Seq == 3 {
				stop() // the example ends here; a service runs until shutdown
			}
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	if err := alerts.Run(ctx); err != nil {
		panic(err)
	}
	sts, err := consumer.ReadStatus(context.Background(), log)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s handled up to seq %d, %d behind\n", sts[0].Name, sts[0].HandledSeq, sts[0].LagEvents)
	// Output:
	// notify: gate decision 1 for r1: {"verdict":"pass"}
	// notify: gate decision 2 for r1: {"verdict":"fail"}
	// notify: gate decision 3 for r1: {"verdict":"pass"}
	// gate_alerts handled up to seq 3, 0 behind
}
