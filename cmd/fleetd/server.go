package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/fx"
)

// server is fleetd's HTTP server, run by the fx lifecycle: it listens on
// start (so a taken port fails start) and shuts down gracefully on stop.
type server struct {
	addr   string
	auth   AuthConfig
	tls    *tls.Config // nil: plain HTTP
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

func newServer(p serverParams) (*server, error) {
	var tlsCfg *tls.Config
	if p.Config.Auth.TLSCert != "" {
		files, err := newTLSFiles(p.Config.Auth, p.Logger, time.Now)
		if err != nil {
			return nil, err
		}
		tlsCfg = files.serverConfig()
	}
	s := &server{
		addr: p.Config.Addr,
		auth: p.Config.Auth,
		tls:  tlsCfg,
		srv: &http.Server{
			Handler:  p.Handler,
			ErrorLog: slog.NewLogLogger(p.Logger.Handler(), slog.LevelWarn),
		},
		logger: p.Logger,
		sd:     p.Shutdowner,
	}
	p.Config.Limits.configure(s.srv)
	p.Lifecycle.Append(fx.Hook{OnStart: s.start, OnStop: s.stop})
	return s, nil
}

func (s *server) start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("fleetd: listen on %s (--addr, FLEETD_ADDR): %w", s.addr, err)
	}
	if err := s.checkExposure(ctx, ln.Addr()); err != nil {
		_ = ln.Close()
		return err
	}
	scheme := "http"
	if s.tls != nil {
		ln, scheme = tls.NewListener(ln, s.tls), "https"
	}
	s.mu.Lock()
	s.ln, s.done = ln, make(chan struct{})
	s.mu.Unlock()
	s.logger.InfoContext(ctx, "fleetd: listening", "addr", ln.Addr().String(), "scheme", scheme, "auth", s.authMode())
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

// checkExposure refuses to serve without authentication on an address
// that is not a loopback one, unless told to, and says at start who can
// reach fleetd.
func (s *server) checkExposure(ctx context.Context, addr net.Addr) error {
	if s.auth.enabled() {
		if s.tls == nil && !isLoopbackAddr(addr) {
			s.logger.WarnContext(ctx, "fleetd: bearer tokens over plain HTTP on a network address: terminate TLS in front of fleetd, or serve it with --tls-cert and --tls-key", "addr", addr.String())
		}
		return nil
	}
	switch {
	case isLoopbackAddr(addr):
		s.logger.InfoContext(ctx, "fleetd: no authentication configured: listening on loopback only; configure --tokens-file or --tls-client-ca to serve agents on the network", "addr", addr.String())
		return nil
	case s.auth.InsecureNoAuth:
		s.logger.WarnContext(ctx, "fleetd: INSECURE: serving without authentication on a network address (--insecure-no-auth): anyone who reaches it can post any host's events and read every rollout", "addr", addr.String())
		return nil
	}
	return fmt.Errorf("refusing to serve without authentication on %s, which is not a loopback address: configure --tokens-file or --tls-client-ca (docs/deploying-fleetd.md), listen on 127.0.0.1, or pass --insecure-no-auth to let anyone who reaches it post and read", addr)
}

func isLoopbackAddr(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// authMode names how callers are authenticated, for the start line.
func (s *server) authMode() string {
	var modes []string
	if s.auth.TokensFile != "" {
		modes = append(modes, "tokens")
	}
	if s.auth.ClientCA != "" {
		modes = append(modes, "client-certificates")
	}
	if len(modes) == 0 {
		return "none"
	}
	return strings.Join(modes, ",")
}
