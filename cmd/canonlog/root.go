package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error in how the command was called (exit 2).
type usageError struct{ error }

// globals are the flags every command shares.
type globals struct {
	databaseURL string
	stdout      io.Writer
	stderr      io.Writer
}

// resolveDatabaseURL applies the fallback chain: --database-url, then
// CANONLOG_DATABASE_URL, then DATABASE_URL, then the embedded default.
func (g *globals) resolveDatabaseURL() string {
	for _, u := range []string{g.databaseURL, os.Getenv("CANONLOG_DATABASE_URL"), os.Getenv("DATABASE_URL")} {
		if u != "" {
			return u
		}
	}
	return eventlog.DefaultDatabaseURL
}

// openMigrated opens the database and applies pending migrations.
func (g *globals) openMigrated(ctx context.Context) (*sqlx.DB, error) {
	db, err := eventlog.OpenDB(ctx, g.resolveDatabaseURL())
	if err != nil {
		return nil, err
	}
	if _, err := migrations.Up(ctx, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "canonlog",
		Short:         "Operate a canonlog event log",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.databaseURL, "database-url", "",
		"database URL: postgres://…, sqlite:PATH or sqlite::memory: (default $CANONLOG_DATABASE_URL, then $DATABASE_URL, then "+eventlog.DefaultDatabaseURL+")")
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDemoCommand(g))
	return root
}

// run executes the command line args and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "canonlog: %v\n", err)
	var ue usageError
	// cobra reports unknown commands and bad argument counts as plain errors.
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), " arg(s)") {
		fmt.Fprintln(stderr, "Run 'canonlog --help' for usage.")
		return exitUsage
	}
	return exitFailure
}
