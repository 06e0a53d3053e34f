package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/cmd/canonlog/canonlogcli"
	"github.com/canonlog/canonlog/natsforward"
	"github.com/canonlog/canonlog/projection"
)

// Exit codes, as canonlogcli.Run returns them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// run runs fleetd's command line args (without the program name) and
// returns the exit code. The tree is canonlog's commands, mounted with
// fleetd's projections and default database, plus serve; without a
// command fleetd serves. serve reads its environment through lookup;
// canonlog's commands read the process's.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	if flag, ok := singleDashFlag(args); ok {
		fmt.Fprintf(stderr, "fleetd: %s: fleetd's flags take two dashes: --%s\nRun 'fleetd --help' for usage.\n", flag, flag[1:])
		return exitUsage
	}
	return canonlogcli.Run(ctx, cliConfig(lookup), withDefaultCommand(args), stdin, stdout, stderr)
}

// cliConfig is fleetd's command tree.
func cliConfig(lookup func(string) (string, bool)) *canonlogcli.Config {
	return &canonlogcli.Config{
		Name:               "fleetd",
		Projections:        projections(),
		DefaultDatabaseURL: DefaultDatabaseURL,
		Commands:           []*cobra.Command{newServeCommand(lookup), newTokenCommand(lookup)},
	}
}

// serveFlags are serve's flags and the root's --database-url: the flags a
// command line without a command may hold.
var serveFlags = []string{"--addr", "--database-url", "--start-timeout", "--nats-url", "--nats-stream", "--nats-subject", "--otlp-traces-endpoint",
	"--tokens-file", "--tls-cert", "--tls-key", "--tls-client-ca", "--insecure-no-auth",
	"--max-concurrent-requests", "--request-timeout"}

// serveBoolFlags are the serveFlags that take no value.
var serveBoolFlags = []string{"--insecure-no-auth"}

// withDefaultCommand puts serve in front of args that name no command:
// a bare fleetd, or one given only serve's flags (fleetd --addr :8080),
// serves, as fleetd did before it had commands, so that deployments keep
// working.
func withDefaultCommand(args []string) []string {
	for i := 0; i < len(args); i++ {
		name, _, hasValue := strings.Cut(args[i], "=")
		if !slices.Contains(serveFlags, name) {
			return args
		}
		if !hasValue && !slices.Contains(serveBoolFlags, name) {
			i++ // the flag's value
		}
	}
	return append([]string{"serve"}, args...)
}

// singleDashFlag finds a flag of fleetd's older command line, which took
// single-dash flags (-addr :8080): the command tree would read it as a
// cluster of one-letter flags and report the first letter, which says
// nothing about the fix.
func singleDashFlag(args []string) (string, bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(a, "=")
		if strings.HasPrefix(name, "-") && slices.Contains(serveFlags, "-"+name) {
			return name, true
		}
	}
	return "", false
}

func newServeCommand(lookup func(string) (string, bool)) *cobra.Command {
	envAddr, _ := lookup("FLEETD_ADDR")
	addr := cmpOr(envAddr, DefaultAddr)
	var natsCfg NATSConfig
	natsCfg.URL, _ = lookup(EnvNATSURL)
	natsCfg.Stream, _ = lookup(EnvNATSStream)
	natsCfg.Subject, _ = lookup(EnvNATSSubject)
	startTimeout := positiveDuration(time.Minute)
	tracesEndpoint, _ := lookup(EnvOTLPTracesEndpoint)
	var auth AuthConfig
	auth.TokensFile, _ = lookup(EnvTokensFile)
	auth.TLSCert, _ = lookup(EnvTLSCert)
	auth.TLSKey, _ = lookup(EnvTLSKey)
	auth.ClientCA, _ = lookup(EnvTLSClientCA)
	limits, limitsErr := limitsFromEnv(lookup)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API (what fleetd does without a command)",
		Long: `serve runs fleetd's HTTP API until SIGINT or SIGTERM. On start it
migrates the database and checks for stale projections (see docs/fx.md):
by default it serves at once and rebuilds stale ones online, each view
swapped in when its rebuild is done (` + app.EnvStalePolicy + `=rebuild-online);
a taken port or a refused start exits 1.

It serves GET /metrics in the Prometheus text format and logs a line
per request (method, route, status, duration) to stderr. With
--otlp-traces-endpoint (or ` + EnvOTLPTracesEndpoint + `) it traces each request,
continuing the trace of its traceparent header, with the log's appends
as child spans, and sends the spans to that OpenTelemetry collector.

fleetd without a command serves, with serve's flags if given:
'fleetd --addr :8080' is 'fleetd serve --addr :8080'.

It serves at most --max-concurrent-requests requests at once (64 by
default), answering more at once with 503 and Retry-After, and gives
each --request-timeout (10s by default) before it answers 503: see
docs/deploying-fleetd.md ("Limits").

With --nats-url it also forwards every event of the log to a NATS
JetStream stream, which must exist (see docs/consumers.md, "Forwarding to
NATS JetStream").

Callers are authenticated with bearer tokens (--tokens-file, issued by
'fleetd token issue') and/or client certificates (--tls-client-ca, with
--tls-cert and --tls-key): an agent posts only its own host's events,
and the reads, gate decisions and /metrics need an operator's
credential. With neither, serve refuses a non-loopback --addr unless
--insecure-no-auth. See docs/deploying-fleetd.md.

Environment: FLEETD_ADDR, ` + EnvTokensFile + `, ` + EnvTLSCert + `, ` + EnvTLSKey + `, ` + EnvTLSClientCA + `, ` + EnvMaxConcurrentRequests + `, ` + EnvRequestTimeout + `, ` + EnvOTLPTracesEndpoint + `, ` + EnvNATSURL + `, ` + EnvNATSStream + `, ` + EnvNATSSubject + `, ` + app.EnvDatabaseURL + ` (then ` + app.EnvDatabaseURLFallback + `), ` +
			app.EnvMigrate + `, ` + app.EnvStalePolicy + `, ` + app.EnvStaleRebuildFast + `, ` + app.EnvMaxPayloadBytes + `, ` + app.EnvSerializeAppends + `, ` +
			app.EnvMaxOpenConns + `, ` + app.EnvMaxIdleConns + `.`,
		Example: `  fleetd serve --addr :8080 --database-url postgres://fleetd@db/fleetd
  fleetd serve --nats-url nats://nats:4222 --nats-stream CANONLOG
  CANONLOG_STALE_POLICY=rebuild fleetd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			canonlog, err := app.LoadConfig(lookup)
			if err != nil {
				return err
			}
			if limitsErr != nil {
				return limitsErr
			}
			if u, _ := cmd.Flags().GetString("database-url"); u != "" {
				canonlog.DatabaseURL = u
			}
			if _, set := lookup(app.EnvStalePolicy); !set {
				// A deploy that bumps a projection's version must not take
				// fleetd down: serve at once, rebuild beside the live view.
				canonlog.Stale = projection.StaleRebuildOnline
			}
			if natsCfg.URL == "" && (natsCfg.Stream != "" || natsCfg.Subject != "") {
				return fmt.Errorf("--nats-stream and --nats-subject need --nats-url (or %s)", EnvNATSURL)
			}
			if natsCfg.URL != "" && natsCfg.Stream == "" {
				return fmt.Errorf("--nats-url needs --nats-stream (or %s): the JetStream stream to forward to", EnvNATSStream)
			}
			if err := auth.check(); err != nil {
				return err
			}
			cfg := Config{Addr: addr, Canonlog: canonlog, Auth: auth, NATS: natsCfg, Limits: limits, Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))}
			if tracesEndpoint != "" {
				tp, err := newOTLPTracerProvider(cmd.Context(), tracesEndpoint)
				if err != nil {
					return err
				}
				cfg.TracerProvider = tp
				defer func() {
					// Sends the spans still batched.
					ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 5*time.Second)
					defer cancel()
					_ = tp.Shutdown(ctx)
				}()
			}
			return serve(cmd.Context(), cfg, time.Duration(startTimeout))
		},
	}
	cmd.Flags().StringVar(&addr, "addr", addr, "HTTP listen address (env FLEETD_ADDR)")
	cmd.Flags().StringVar(&auth.TokensFile, "tokens-file", auth.TokensFile, "accept the bearer tokens of this file (fleetd token issue); re-read when it changes (env "+EnvTokensFile+")")
	cmd.Flags().StringVar(&auth.TLSCert, "tls-cert", auth.TLSCert, "serve HTTPS with this PEM certificate (env "+EnvTLSCert+")")
	cmd.Flags().StringVar(&auth.TLSKey, "tls-key", auth.TLSKey, "the PEM key of --tls-cert (env "+EnvTLSKey+")")
	cmd.Flags().StringVar(&auth.ClientCA, "tls-client-ca", auth.ClientCA, "authenticate agents by client certificates signed by these PEM CAs: the subject CN is the host (env "+EnvTLSClientCA+")")
	cmd.Flags().BoolVar(&auth.InsecureNoAuth, "insecure-no-auth", false, "serve without authentication on a network address: anyone who reaches fleetd may post any host's events")
	cmd.Flags().StringVar(&natsCfg.URL, "nats-url", natsCfg.URL, "forward the log's events to NATS JetStream at this URL (env "+EnvNATSURL+")")
	cmd.Flags().StringVar(&natsCfg.Stream, "nats-stream", natsCfg.Stream, "the JetStream stream to forward to; it must exist (env "+EnvNATSStream+")")
	cmd.Flags().StringVar(&natsCfg.Subject, "nats-subject", natsCfg.Subject, "the subject template (env "+EnvNATSSubject+`; default "`+natsforward.DefaultSubject+`")`)
	cmd.Flags().StringVar(&tracesEndpoint, "otlp-traces-endpoint", tracesEndpoint, "trace requests and appends, sending the spans over OTLP/HTTP to this URL, e.g. http://collector:4318/v1/traces (env "+EnvOTLPTracesEndpoint+")")
	cmd.Flags().Var((*positiveInt)(&limits.MaxConcurrentRequests), "max-concurrent-requests", "requests served at once; more are answered 503 with Retry-After at once (env "+EnvMaxConcurrentRequests+")")
	cmd.Flags().Var((*positiveDuration)(&limits.RequestTimeout), "request-timeout", "how long a request may wait for the database before it is answered 503 with Retry-After (env "+EnvRequestTimeout+")")
	cmd.Flags().Var(&startTimeout, "start-timeout", "how long start may take: migrations, and rebuilds with "+app.EnvStalePolicy+"=rebuild (rebuild-online, the default, does not wait)")
	return cmd
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// positiveDuration is a flag value that refuses zero and negative
// durations, so that a bad --start-timeout is a flag error (exit 2).
type positiveDuration time.Duration

func (d *positiveDuration) String() string { return time.Duration(*d).String() }
func (d *positiveDuration) Type() string   { return "duration" }

func (d *positiveDuration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return fmt.Errorf("%v: use a positive duration such as 2m", v)
	}
	*d = positiveDuration(v)
	return nil
}

// serve runs the service until SIGINT or SIGTERM (fx listens for them), or
// until ctx ends.
func serve(ctx context.Context, cfg Config, startTimeout time.Duration) error {
	a := fx.New(Options(cfg))
	if err := a.Err(); err != nil {
		return startupError(err)
	}
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := a.Start(startCtx); err != nil {
		return fmt.Errorf("start: %w", startupError(err))
	}
	if cfg.Logger != nil {
		cfg.Logger.InfoContext(ctx, "fleetd: started")
	}
	code := 0
	var reason slog.Attr
	select {
	case sig := <-a.Wait():
		code = sig.ExitCode
		reason = slog.Any("signal", sig.Signal)
		if sig.Signal == nil {
			reason = slog.Int("exit_code", code) // fx.Shutdowner: the service stopped itself
		}
	case <-ctx.Done():
		reason = slog.String("cause", context.Cause(ctx).Error())
	}
	if cfg.Logger != nil {
		cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "fleetd: shutting down", reason)
	}
	stopCtx, cancelStop := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelStop()
	if err := a.Stop(stopCtx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if cfg.Logger != nil {
		cfg.Logger.InfoContext(ctx, "fleetd: stopped")
	}
	if code != 0 {
		// The server stopped the service after it failed, and logged why.
		return fmt.Errorf("serve: the service stopped after a failure (exit code %d): see the log above", code)
	}
	return nil
}
