// Package migrations manages canonlog's database schema with goose v3.
//
// The SQL lives in this package, embedded, one folder per dialect
// (postgres/ and sqlite/); the files are plain goose migrations, so the stock
// goose command line tool reads them too. Each migration history — canonlog's
// core and every projection that brings its own tables — has its own version
// table (canonlog_migrations, canonlog_migrations_<projection>), so canonlog
// never collides with an application's own goose history. Every run holds a
// lock — a session-level advisory lock on PostgreSQL, an flock on the file
// next to a SQLite database named by LockFileSuffix — so two processes
// migrating at once apply each migration exactly once, and both succeed.
//
//	db, err := eventlog.OpenDB(ctx, "sqlite:canonlog.db")
//	if err != nil { … }
//	if _, err := migrations.Up(ctx, db); err != nil { … }
//
// # Reading the state
//
// Status, Migrator.Status, InstalledSets and PlanDown only read: they
// create no version table (goose's own Provider.Status would), take no
// lock and write nothing, so they work on a read-only connection and
// never wait for a migration in progress. A set whose version table does
// not exist is simply pending. On PostgreSQL they look in current_schema()
// — the schema goose creates its tables in — and on SQLite in the main
// database. During a concurrent run they see the state between two of its
// migrations, never half of one.
//
// # Tearing down
//
// Down rolls back every set it is given, projections first (the reverse of
// Up's order), core last. The database may hold sets that another program
// installed — a service's own projections, whose tables point into
// event_log — and rolling back core under them would stop halfway. So
// Down first lists the sets present (InstalledSets) and refuses, with an
// *UnknownSetsError and before changing anything, when one it was not
// given still has migrations applied: roll those back with the program
// that registers them, then run Down again. PlanDown lists what Down would
// roll back, so that a command can show it before asking for
// confirmation. A rollback that fails after Down has started returns a
// *PartialError saying what was rolled back, what failed and what is still
// applied; running Down again continues from there.
//
//	sets := reg.MigrationSets() // a projection.Registry's sets, each named after its projection
//	plan, err := migrations.PlanDown(ctx, db, sets...)
//	if err != nil { … } // errors.Is(err, migrations.ErrUnknownSets): another program's projections are installed
//	for _, s := range plan { fmt.Println(s.Set, s.Source) }
//	if _, err := migrations.Down(ctx, db, sets...); err != nil { … }
package migrations
