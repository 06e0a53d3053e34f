package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"go.uber.org/fx"
)

// server is fleetd's HTTP server, run by the fx lifecycle: it listens on
// start (so a taken port fails start) and shuts down gracefully on stop.
type server struct {
	addr   string
	srv    *http.Server
	logger *slog.Logger
	sd     fx.Shutdowner

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{} // closed when Serve returns
}

type serverParams struct {
	fx.In

	Lifecycle  fx.Lifecycle
	Shutdowner fx.Shutdowner
	Config     Config
	Handler    http.Handler
	Logger     *slog.Logger
}

func newServer(p serverParams) *server {
	s := &server{
		addr: p.Config.Addr,
		srv: &http.Server{
			Handler:  p.Handler,
			ErrorLog: slog.NewLogLogger(p.Logger.Handler(), slog.LevelWarn),
		},
		logger: p.Logger,
		sd:     p.Shutdowner,
	}
	p.Config.Limits.configure(s.srv)
	p.Lifecycle.Append(fx.Hook{OnStart: s.start, OnStop: s.stop})
	return s
}

func (s *server) start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("fleetd: listen on %s (--addr, FLEETD_ADDR): %w", s.addr, err)
	}
	s.mu.Lock()
	s.ln, s.done = ln, make(chan struct{})
	s.mu.Unlock()
	s.logger.InfoContext(ctx, "fleetd: listening", "addr", ln.Addr().String())
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			// Serving stopped on its own: stop the whole service rather than
			// run on without its API.
			s.logger.Error("fleetd: HTTP server failed", "err", err)
			_ = s.sd.Shutdown(fx.ExitCode(1))
		}
	}()
	return nil
}

// stop stops accepting, waits for requests in flight (until ctx ends),
// and waits for the serving goroutine.
func (s *server) stop(ctx context.Context) error {
	s.logger.InfoContext(ctx, "fleetd: shutting down the HTTP server: no new requests, waiting for those in flight", "addr", s.Addr())
	err := s.srv.Shutdown(ctx)
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	if err != nil {
		return fmt.Errorf("fleetd: shut down the HTTP server: %w", err)
	}
	return nil
}

// Addr returns the address the server listens on (with the real port when
// the configured one was 0), or "" before start.
func (s *server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}
