package probefailures_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// The gate reads a rollout, decides, and appends its decision on
// condition that no failure of the rollout landed since the reading.
func ExampleStore_Gate() {
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, "sqlite::memory:")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	reg := projection.Must(projection.NewRegistry(probefailures.New()))
	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
	if err != nil {
		panic(err)
	}
	if _, err := projection.Migrate(ctx, log, reg); err != nil {
		panic(err)
	}
	report := func(host, eventID string) {
		payload := `{"type":"ProbeResult","mode":"enforce","status":"fail","probe_name":"ssh",` +
			`"sub_results":[{"control_id":"CIS-5.2.1","framework":"cis","status":"fail"}]}`
		if _, err := log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: host,
			RolloutID: "r-42", EventID: eventID, Payload: json.RawMessage(payload)}); err != nil {
			panic(err)
		}
	}
	decide := func(g probefailures.GateReading, eventID string) error {
		payload := fmt.Sprintf(`{"decision":"halt","read_seq":%d}`, g.Condition.AfterSeq)
		_, err := log.If(g.Condition).Append(ctx, eventlog.Entry{Kind: eventlog.KindGateDecision,
			RolloutID: "r-42", EventID: eventID, Payload: json.RawMessage(payload)})
		return err
	}

	store := probefailures.NewStore(db)
	report("web-1", "web-1/probe/1")
	g, err := store.Gate(ctx, log, "r-42")
	if err != nil {
		panic(err)
	}
	fmt.Println("failing hosts", g.FailingHosts, "up to seq", g.Condition.AfterSeq)

	report("web-2", "web-2/probe/1") // lands between the reading and the decision
	var failed *eventlog.ConditionError
	if err := decide(g, "gate/r-42/1"); errors.As(err, &failed) {
		fmt.Println("refused: failure", failed.Seq, "landed after seq", failed.Condition.AfterSeq)
	}

	if g, err = store.Gate(ctx, log, "r-42"); err != nil { // read again, decide again
		panic(err)
	}
	fmt.Println("failing hosts", g.FailingHosts, "up to seq", g.Condition.AfterSeq, "decided:", decide(g, "gate/r-42/1") == nil)
	// Output:
	// failing hosts 1 up to seq 1
	// refused: failure 2 landed after seq 1
	// failing hosts 2 up to seq 2 decided: true
}
