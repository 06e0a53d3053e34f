package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/natsforward"
)

// Environment variables of fleetd's forwarder to NATS JetStream (serve's
// --nats-url, --nats-stream and --nats-subject).
const (
	EnvNATSURL     = "FLEETD_NATS_URL"
	EnvNATSStream  = "FLEETD_NATS_STREAM"
	EnvNATSSubject = "FLEETD_NATS_SUBJECT"
)

// NATSConfig configures the forwarder of fleetd's events to a NATS
// JetStream stream (package natsforward).
type NATSConfig struct {
	// URL is the NATS server (or a comma-separated list of them). Empty:
	// fleetd forwards nothing.
	URL string
	// Stream is the JetStream stream to publish to; it must exist.
	// Required with URL.
	Stream string
	// Subject is the subject template. Defaults to
	// natsforward.DefaultSubject.
	Subject string
}

// forwardOption runs the forwarder in fleetd's fx app when cfg names a
// NATS server, and is empty otherwise.
func forwardOption(cfg Config) fx.Option {
	if cfg.NATS.URL == "" {
		return fx.Options()
	}
	return fx.Invoke(newForwarder)
}

// forwarder runs a natsforward.Forwarder for the fx lifecycle: it
// connects and starts forwarding on start, and on stop lets the page in
// flight be acknowledged and closes the connection. A forwarder that
// stops on its own (the stream is missing or holds another publisher's
// messages, an event cannot be published) stops fleetd, as a failed HTTP
// server does: NATS being unreachable does not, the forwarder waits.
type forwarder struct {
	cfg    NATSConfig
	log    *eventlog.Log
	logger *slog.Logger
	sd     fx.Shutdowner

	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

type forwarderParams struct {
	fx.In

	Lifecycle  fx.Lifecycle
	Shutdowner fx.Shutdowner
	Config     Config
	Log        *eventlog.Log
	Logger     *slog.Logger
}

func newForwarder(p forwarderParams) {
	fw := &forwarder{cfg: p.Config.NATS, log: p.Log, logger: p.Logger, sd: p.Shutdowner}
	p.Lifecycle.Append(fx.Hook{OnStart: fw.start, OnStop: fw.stop})
}

func (fw *forwarder) start(context.Context) error {
	// A NATS server that is down at start is waited for, as one that goes
	// down later is: fleetd serves meanwhile, and the forwarder catches up.
	nc, err := nats.Connect(fw.cfg.URL, nats.Name("fleetd"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second))
	if err != nil {
		return fmt.Errorf("fleetd: connect to NATS at %s (--nats-url, %s): %w", fw.cfg.URL, EnvNATSURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("fleetd: NATS JetStream: %w", err)
	}
	f, err := natsforward.New(fw.log, js, &natsforward.Config{Stream: fw.cfg.Stream, Subject: fw.cfg.Subject, Logger: fw.logger})
	if err != nil {
		nc.Close()
		return fmt.Errorf("fleetd: the NATS forwarder (--nats-stream, --nats-subject): %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fw.nc, fw.cancel, fw.done = nc, cancel, make(chan struct{})
	fw.logger.Info("fleetd: forwarding events to NATS JetStream", "stream", fw.cfg.Stream, "consumer", f.Name())
	go func() {
		defer close(fw.done)
		err := f.Run(ctx)
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
			return
		}
		fw.logger.Error("fleetd: the NATS forwarder stopped", "err", err)
		_ = fw.sd.Shutdown(fx.ExitCode(1))
	}()
	return nil
}

// stop ends the forwarder, waiting (until ctx ends) for the page in
// flight, and closes the connection.
func (fw *forwarder) stop(ctx context.Context) error {
	if fw.cancel == nil {
		return nil
	}
	fw.cancel()
	select {
	case <-fw.done:
	case <-ctx.Done():
	}
	fw.nc.Close()
	return nil
}
