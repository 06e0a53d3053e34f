// Package projection keeps derived views (projections) in step with the
// event log, and proves they follow from it.
//
// A Projection derives rows from events. Registered in a Registry, which is
// the log's eventlog.Hook, it is applied inside every append's transaction:
// the view and the events it derives from commit together or not at all.
// Rebuild re-derives a projection from seq 1 in one transaction; Verify
// derives it afresh without touching the live view and reports any
// difference; a checkpoint per projection records the version it was built
// at, so ReadStatus and CheckStale can tell when the code has moved on.
//
//	reg := projection.NewRegistry()
//	reg.MustRegister(myProjection{})
//	log, err := eventlog.New(db, &eventlog.Config{Hook: reg})
//	if err != nil { … }
//	if _, err := projection.Migrate(ctx, log, reg); err != nil { … } // core + projection tables
//	if _, err := projection.CheckStale(ctx, log, reg, projection.StaleRefuse); err != nil { … }
//	// appends now update the view in the same transaction
//	_, err = projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: []string{"my_view"}})
//
// See docs/projections.md for how to write one.
package projection
