// Package probefailures is canonlog's reference projection: probe_failures,
// one row per failing control of an enforce-mode probe result, derived from
// agent events, and the compliance-gate queries over it.
//
// A fleet agent reports each probe run as an agent_event whose payload is a
// ProbeResult. The gate asks, during a rollout wave, which hosts fail which
// controls; Store answers from the indexed view, kept in the same
// transaction as the event and re-derivable from the log:
//
//	reg := projection.Must(projection.NewRegistry(probefailures.New()))
//	log, _ := eventlog.New(db, &eventlog.Config{Hook: reg})
//	_, _ = projection.Migrate(ctx, log, reg)
//	_, _ = log.Append(ctx, eventlog.Entry{Kind: eventlog.KindAgentEvent, HostID: "web-1",
//		RolloutID: "r-42", EventID: "web-1/probe/77", Payload: payload})
//	hosts, _ := probefailures.NewStore(db).FailingHosts(ctx, "r-42", "CIS-5.2.1")
//
// Store.Gate reads a rollout's counts together with the seq they are
// complete up to, and the condition to append the gate's decision under:
// the decision is refused if a failure of the rollout lands in between.
//
// A malformed probe result is refused at append (ErrInvalidProbeResult,
// naming the field): a poisoned row would break every later rebuild. See
// docs/probe-failures.md for the event format, the rules and the queries.
package probefailures
