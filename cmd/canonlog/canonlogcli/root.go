package canonlogcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/redact"
	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// Exit codes.
const (
	exitOK        = 0
	exitFailure   = 1
	exitUsage     = 2
	exitDifferent = 3 // verify found a difference
	// exitUnhealthy: status --check found a stale projection, a stopped
	// consumer or a consumer lagging past a limit.
	exitUnhealthy = 4
	// exitInterrupted: the context Run was given ended (SIGINT or SIGTERM
	// in Main) before the command was done; the shells' code for a
	// command ended by SIGINT.
	exitInterrupted = 130
)

// usageError marks an error in how the command was called (exit 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitCodeError makes run exit with code after printing err.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

// Config configures the command tree. A nil *Config is the stock canonlog
// command: name "canonlog", the probe_failures projection.
type Config struct {
	// Name is the command's name in usage lines, messages and hints, such
	// as "canonlog" or your service's operator binary ("fleetd").
	// Defaults to "canonlog".
	Name string

	// Projections are the projections this binary keeps: every append
	// applies them, and rebuild, verify and status operate them. Each
	// command builds a fresh registry from them. Defaults to the
	// reference projection alone (probefailures.New()); pass an empty,
	// non-nil slice for a binary that keeps none.
	Projections []projection.Projection

	// Version replaces the module version that 'version' and --version
	// print, e.g. a release number set at build time with -ldflags "-X".
	// The VCS revision and the Go version recorded in the binary are
	// printed after it either way. Defaults to the version of the main
	// module from runtime/debug.ReadBuildInfo ("(devel)" for a build
	// from a working tree).
	Version string

	// DefaultDatabaseURL is the database the commands open when neither
	// --database-url, CANONLOG_DATABASE_URL nor DATABASE_URL names one:
	// a service's own default, so that its operator commands open the
	// database it serves from. Defaults to eventlog.DefaultDatabaseURL
	// (sqlite:canonlog.db).
	DefaultDatabaseURL string

	// Commands are the application's own commands (a service's "serve",
	// say), added to the root next to canonlog's. They share the root's
	// --database-url flag (cmd.Flags().GetString("database-url")), its
	// streams (cmd.OutOrStdout(), cmd.ErrOrStderr()) and Run's handling
	// of errors: one line naming the binary, exit 2 for a flag error and
	// 1 for any other. Cobra commands keep the flags they parsed: build
	// new ones for each Run. Defaults to none.
	Commands []*cobra.Command
}

func (c *Config) withDefaults() *Config {
	out := Config{}
	if c != nil {
		out = *c
	}
	if out.Name == "" {
		out.Name = "canonlog"
	}
	if out.Projections == nil {
		out.Projections = []projection.Projection{probefailures.New()}
	}
	if out.DefaultDatabaseURL == "" {
		out.DefaultDatabaseURL = eventlog.DefaultDatabaseURL
	}
	return &out
}

// globals are the configuration, flags and streams every command shares.
type globals struct {
	cfg         *Config
	databaseURL string
	stdin       io.Reader
	stdout      io.Writer
	stderr      io.Writer
}

// named puts the command's name (Config.Name) for {name} in s: help texts
// and hints show the command a user types, "fleetd rebuild" in a service's
// operator binary.
func (g *globals) named(s string) string {
	return strings.ReplaceAll(s, "{name}", g.cfg.Name)
}

// resolveDatabaseURL applies the fallback chain: --database-url, then
// CANONLOG_DATABASE_URL, then DATABASE_URL, then Config.DefaultDatabaseURL.
func (g *globals) resolveDatabaseURL() string {
	return eventlog.DatabaseURL(g.databaseURL, nil, g.cfg.DefaultDatabaseURL)
}

// newRegistry returns the projections the command line keeps. Every
// append goes through a log whose hook is this registry: an event appended
// without it would not reach them, and the views would drift from the log
// until the next rebuild.
func (g *globals) newRegistry() (*projection.Registry, error) {
	return projection.NewRegistry(g.cfg.Projections...)
}

// env is canonlog assembled on the database the command names.
type env struct {
	m    *projection.Manager
	db   *sqlx.DB
	log  *eventlog.Log
	reg  *projection.Registry
	url  string // redacted, for output
	name string // the binary's name, for hints
}

func (e *env) Close() {
	_ = e.m.Close()
	_ = e.db.Close()
}

// openMode says what open does to the schema.
type openMode int

const (
	// requireSchema refuses a database without canonlog's tables or the
	// tables of this binary's projections that it installed, and a SQLite
	// file that does not exist, rather than creating either: a mistyped URL
	// must not leave an empty database behind. (A projection of this
	// binary that the database never installed refuses the appends of its
	// kinds; see projection.NotInstalledError.)
	requireSchema openMode = iota
	// readSchema is requireSchema for commands that only read the log
	// (query, tail, status): canonlog's own tables suffice, whatever
	// projections the database holds.
	readSchema
	// migrateSchema applies pending migrations (Manager.Migrate, so that
	// projection checkpoints are installed too).
	migrateSchema
	// anySchema opens the database as it is (for the migrate command).
	anySchema
)

// openOptions are per-command choices for open.
type openOptions struct {
	// allowDrift lets appends skip projections that other binaries
	// register (projection.ManagerConfig.AllowDrift).
	allowDrift bool
}

// open opens the database named by the URL flags and assembles canonlog
// on it with this binary's projections.
func (g *globals) open(ctx context.Context, mode openMode, opts ...openOptions) (*env, error) {
	var o openOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	raw := g.resolveDatabaseURL()
	if mode == requireSchema || mode == readSchema {
		if path, ok := eventlog.SQLiteFile(raw); ok {
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("no database at %s: create it with '%s migrate up' (or run '%s demo'), or pass --database-url", path, g.cfg.Name, g.cfg.Name)
			}
		}
	}
	db, err := eventlog.OpenDB(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, connectHint(raw, err))
	}
	e, err := g.assemble(db, o)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	e.url = redact.URL(raw)
	switch mode {
	case migrateSchema:
		if _, err := e.m.Migrate(ctx); err != nil {
			e.Close()
			return nil, fmt.Errorf("migrate: %w", err)
		}
	case requireSchema, readSchema:
		if err := e.checkSchema(ctx, mode); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// assemble builds the Manager on db with this binary's projections.
func (g *globals) assemble(db *sqlx.DB, o openOptions) (*env, error) {
	reg, err := g.newRegistry()
	if err != nil {
		return nil, err
	}
	m, err := projection.NewManager(db, reg, &projection.ManagerConfig{AllowDrift: o.allowDrift})
	if err != nil {
		return nil, err
	}
	return &env{m: m, db: db, log: m.Log(), reg: reg, name: g.cfg.Name}, nil
}

// connectHint says what to look at when connecting to raw failed with err.
// A SQLite database is a file, not a server that may be down: it fails to
// open for want of a writable directory, or stays locked by another
// process past the busy timeout.
func connectHint(raw string, err error) string {
	if !strings.HasPrefix(raw, "sqlite:") && !strings.HasPrefix(raw, "file:") {
		return "check --database-url, CANONLOG_DATABASE_URL or DATABASE_URL, and that the database is running"
	}
	if eventlog.Retryable(err) { // SQLite's busy or locked
		return "another process kept the SQLite database locked for longer than the busy timeout, 10 s; try again when it is done"
	}
	return "check --database-url, CANONLOG_DATABASE_URL or DATABASE_URL, and that the SQLite file's directory exists and that you may read and write there"
}

// checkSchema makes sure canonlog's tables exist and, unless the command
// only reads the log, this binary's projections' tables too, reading only
// (goose's own status check would create its version tables).
func (e *env) checkSchema(ctx context.Context, mode openMode) error {
	if mode == readSchema {
		if _, err := e.log.LastSeq(ctx); err != nil {
			return e.schemaError("event_log", err)
		}
		if err := e.m.Load(ctx); err != nil {
			return e.schemaError("canonlog_projections", err)
		}
		return nil
	}
	err := e.m.CheckSchema(ctx)
	var se *projection.SchemaError
	if errors.As(err, &se) {
		return e.schemaError(se.Table, se.Err)
	}
	return err
}

func (e *env) schemaError(table string, err error) error {
	return fmt.Errorf("the database at %s has no table %s, or an older one (%v): run '%s migrate up' first", e.url, table, err, e.name)
}

func newRootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   g.cfg.Name,
		Short: "Operate a canonlog event log",
		Long: g.named(`{name} operates a canonlog database: an append-only event log with
projections (derived tables such as probe_failures) kept in step with it.

Exit codes: 0 ok, 1 failure, 2 usage error, 3 verify found a difference,
4 status --check found a problem, 130 interrupted (SIGINT or SIGTERM). See docs/cli.md.`),
		Version:       g.version(),
		Args:          unknownCommand,
		SilenceUsage:  true,
		SilenceErrors: true,
		// The root runs only to show its help, or to refuse a word that
		// is no command (Args).
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		// Every numeric flag is checked against the bounds its help
		// states, before the command runs.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return checkNumFlags(cmd) },
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SuggestionsMinimumDistance = 2
	root.PersistentFlags().StringVar(&g.databaseURL, "database-url", "",
		"database URL: postgres://…, sqlite:PATH or sqlite::memory: (default $CANONLOG_DATABASE_URL, then $DATABASE_URL, then "+g.cfg.DefaultDatabaseURL+")")
	root.SetIn(g.stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newMigrateCommand(g),
		newAppendCommand(g),
		newQueryCommand(g),
		newTailCommand(g),
		newRebuildCommand(g),
		newVerifyCommand(g),
		newStatusCommand(g),
		newConsumersCommand(g),
		newDemoCommand(g),
		newGenCommand(g),
		newBenchCommand(g),
		newVersionCommand(g),
	)
	root.AddCommand(g.cfg.Commands...)
	// cobra adds help and completion when the tree runs; added now, their
	// argument checks are wrapped too.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	usageArgs(root)
	return root
}

// unknownCommand is the root's argument check: any argument is a word
// that names no command.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	return errors.New(msg)
}

// usageArgs makes the argument check of every command in the tree return
// a usage error (exit 2): cobra's checks (NoArgs, …) return plain errors.
// A command that only groups others (completion) gets to show its help
// when run: cobra checks the arguments of runnable commands only, and
// would show the help for "completion tcsh" and exit 0.
func usageArgs(cmd *cobra.Command) {
	if !cmd.Runnable() && cmd.HasSubCommands() {
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		if cmd.Args == nil {
			cmd.Args = cobra.NoArgs
		}
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		usageArgs(sub)
	}
}

// errInterrupted ends a command that runs until it is interrupted (tail
// -f) when its context ends.
var errInterrupted = errors.New("interrupted")

// Main runs the command tree on the process's arguments and streams, stops
// at SIGINT or SIGTERM, and exits with the command's exit code. It is the
// whole of an operator binary's main function:
//
//	func main() { canonlogcli.Main(&canonlogcli.Config{Name: "myctl", Projections: ...}) }
func Main(cfg *Config) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, cfg, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Run executes the command line args (without the program name) and
// returns the process exit code: 0 ok, 1 failure, 2 usage error, 3 verify
// found a difference, 4 status --check found a problem, 130 interrupted — ctx ended before the command was
// done (Main cancels it at SIGINT or SIGTERM). Errors are printed to
// stderr as one line; a usage error adds a line naming the failed
// command's help.
func Run(ctx context.Context, cfg *Config, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{cfg: cfg.withDefaults(), stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if cmd == nil {
		cmd = root
	}
	var (
		ue   usageError
		ce   exitCodeError
		code = exitFailure
	)
	switch {
	case errors.As(err, &ue):
		code = exitUsage
	case errors.As(err, &ce):
		code = ce.code
	case ctx.Err() != nil:
		// Whatever the error says (a cancelled query, a closed
		// connection), the interrupt caused it.
		code = exitInterrupted
	}
	msg := err.Error()
	if code == exitInterrupted && !strings.Contains(msg, "interrupted") {
		msg = "interrupted"
		if cmd != root {
			msg = strings.TrimPrefix(cmd.CommandPath(), root.Name()+" ") + ": interrupted"
		}
	}
	// The library redacts URLs it reports; this catches any other path a
	// secret could take into a message.
	msg = redact.Message(msg, g.resolveDatabaseURL())
	// One line, whatever the error wrapped (a joined rollback error, a
	// driver message with line breaks).
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
	fmt.Fprintf(stderr, "%s: %s\n", g.cfg.Name, msg)
	if code == exitUsage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}
