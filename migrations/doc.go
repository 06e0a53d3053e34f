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
package migrations
