// Package projection keeps derived views (projections) in step with the
// event log, and proves they follow from it.
//
// A Projection derives rows from events. A Manager assembles canonlog on a
// database: the log, and the Registry of projections that every append of
// the log applies inside its own transaction, so the view and the events
// it derives from commit together or not at all. Rebuild re-derives a
// projection from seq 1 in one transaction; Verify derives it afresh
// without touching the live view and reports any difference; a checkpoint
// per projection records the version it was built at and the kinds it
// consumes, so Status and CheckStale tell when the code has moved on, and
// a binary that does not register a projection refuses to append what it
// consumes (ManagerConfig.AllowDrift overrides).
//
//	m, err := projection.OpenManager(ctx, url, projection.Must(projection.NewRegistry(myProjection{})), nil)
//	if err != nil {
//		return err
//	}
//	defer m.Close()
//	if _, err := m.Migrate(ctx); err != nil { // core + projection tables
//		return err
//	}
//	if _, err := m.CheckStale(ctx, projection.StaleRefuse); err != nil {
//		return err
//	}
//	// m.Log()'s appends now update the view in the same transaction
//	_, err = m.Rebuild(ctx, &projection.RebuildOptions{Names: []string{"my_view"}})
//
// See docs/projections.md for how to write one.
package projection
