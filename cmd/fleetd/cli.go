package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/projection"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const usage = `usage: fleetd [flags]                 serve the HTTP API
       fleetd [flags] rebuild [NAME…]  rebuild projections (all without names) and exit

flags:
`

// run runs fleetd with the command line args and the environment read
// through lookup, and returns the exit code.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nenvironment: FLEETD_ADDR, %s (then %s), %s, %s, %s, %s (see docs/fx.md)\n",
			app.EnvDatabaseURL, app.EnvDatabaseURLFallback, app.EnvMigrate, app.EnvStalePolicy, app.EnvMaxPayloadBytes, app.EnvSerializeAppends)
	}
	envAddr, _ := lookup("FLEETD_ADDR")
	addr := fs.String("addr", cmpOr(envAddr, DefaultAddr), "HTTP listen address (env FLEETD_ADDR)")
	databaseURL := fs.String("database-url", "", "database URL (default $"+app.EnvDatabaseURL+", then $"+app.EnvDatabaseURLFallback+", then "+DefaultDatabaseURL+")")
	startTimeout := fs.Duration("start-timeout", time.Minute, "how long start may take: migrations, and rebuilds with "+app.EnvStalePolicy+"=rebuild")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	canonlog, err := app.LoadConfig(lookup)
	if err != nil {
		fmt.Fprintf(stderr, "fleetd: %v\n", err)
		return exitUsage
	}
	if *databaseURL != "" {
		canonlog.DatabaseURL = *databaseURL
	}
	cfg := Config{Addr: *addr, Canonlog: canonlog}
	if *startTimeout <= 0 {
		fmt.Fprintf(stderr, "fleetd: -start-timeout %v: use a positive duration such as 2m\n", *startTimeout)
		return exitUsage
	}

	switch cmd := fs.Arg(0); cmd {
	case "":
		return serve(ctx, cfg, *startTimeout, stderr)
	case "rebuild":
		if err := rebuild(ctx, cfg, *startTimeout, fs.Args()[1:], stdout); err != nil {
			fmt.Fprintf(stderr, "fleetd: rebuild: %v\n", err)
			return exitFailure
		}
		return exitOK
	default:
		fmt.Fprintf(stderr, "fleetd: unknown command %q: run fleetd to serve, or fleetd rebuild [NAME…]\n", cmd)
		return exitUsage
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// serve runs the service until SIGINT or SIGTERM (fx listens for them).
func serve(ctx context.Context, cfg Config, startTimeout time.Duration, stderr io.Writer) int {
	a := fx.New(Options(cfg))
	if err := a.Err(); err != nil {
		fmt.Fprintf(stderr, "fleetd: %v\n", err)
		return exitFailure
	}
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := a.Start(startCtx); err != nil {
		fmt.Fprintf(stderr, "fleetd: start: %v\n", err)
		return exitFailure
	}
	sig := <-a.Wait()
	stopCtx, cancelStop := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelStop()
	if err := a.Stop(stopCtx); err != nil {
		fmt.Fprintf(stderr, "fleetd: stop: %v\n", err)
		return exitFailure
	}
	return sig.ExitCode
}

// rebuild re-derives the named projections (all when names is empty) from
// the log. The canonlog command cannot rebuild rollout_progress: only a
// process that registers a projection knows how to derive it.
func rebuild(ctx context.Context, cfg Config, startTimeout time.Duration, names []string, stdout io.Writer) (err error) {
	// Whatever is stale is what is about to be fixed: do not refuse it.
	cfg.Canonlog.Stale = projection.StaleIgnore
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	var (
		log *eventlog.Log
		reg *projection.Registry
	)
	a := fx.New(CoreOptions(cfg), fx.Populate(&log, &reg))
	if err := a.Err(); err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := a.Start(startCtx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		err = errors.Join(err, a.Stop(stopCtx))
	}()
	res, err := projection.Rebuild(ctx, log, reg, &projection.RebuildOptions{Names: names})
	for _, r := range res {
		fmt.Fprintf(stdout, "rebuilt %s (version %d): %d events replayed, %d rows, up to seq %d, in %s\n",
			r.Name, r.Version, r.Events, r.Rows, r.Seq, r.Duration.Round(time.Millisecond))
	}
	return err
}

// quietLogger logs warnings and errors only: for one-shot commands, whose
// output is their result.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
