package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// tlsFiles is the server's TLS configuration, from AuthConfig's PEM
// files, read again when they change: a certificate rotated on disk (by
// cert-manager, certbot, a configuration tool) takes effect for new
// connections within fileRecheck, without a restart.
//
// A change that cannot be read whole is handled by what it holds: a
// server certificate or key that fails to load (a rotation half done,
// the key not yet written) leaves the previous pair in use; a client CA
// bundle that fails to load trusts no CA until it is fixed, so that a
// bundle rewritten to drop a CA never keeps trusting it by mistake.
// Either logs one ERROR per breakage.
type tlsFiles struct {
	auth   AuthConfig
	now    func() time.Time
	logger *slog.Logger

	mu       sync.Mutex
	watch    fileWatch
	cert     *tls.Certificate
	pool     *x509.CertPool // nil without ClientCA
	current  *tls.Config
	certErr  string // the server certificate's breakage, once logged
	poolErr  string // the client CAs' breakage, once logged
	noClient *x509.CertPool
}

// newTLSFiles reads the files: they must load, so that a server never
// starts with a certificate it cannot serve.
func newTLSFiles(auth AuthConfig, logger *slog.Logger, now func() time.Time) (*tlsFiles, error) {
	f := &tlsFiles{auth: auth, now: now, logger: logger, noClient: x509.NewCertPool()}
	cert, err := f.loadCert()
	if err != nil {
		return nil, err
	}
	f.cert = cert
	if auth.ClientCA != "" {
		if f.pool, err = f.loadPool(); err != nil {
			return nil, err
		}
	}
	f.watch = newFileWatch(now(), auth.TLSCert, auth.TLSKey, auth.ClientCA)
	f.current = f.build()
	return f, nil
}

func (f *tlsFiles) loadCert() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(f.auth.TLSCert, f.auth.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", f.auth.TLSCert, f.auth.TLSKey, err)
	}
	return &cert, nil
}

func (f *tlsFiles) loadPool() (*x509.CertPool, error) {
	pem, err := os.ReadFile(f.auth.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", f.auth.ClientCA)
	}
	return pool, nil
}

// build is the configuration of the current files. A client
// certificate, when sent, must chain to ClientCA and be valid now, or
// the handshake fails; one is not required, so that token holders
// connect too: whether a request is allowed is the handler's decision,
// with a JSON answer.
func (f *tlsFiles) build() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*f.cert}}
	if f.auth.ClientCA != "" {
		cfg.ClientCAs = f.pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
}

// config is the configuration for a new connection, the files read
// again first when they changed.
func (f *tlsFiles) config() *tls.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, changed := f.watch.look(f.now()); !changed {
		return f.current
	}
	if cert, err := f.loadCert(); err != nil {
		if err.Error() != f.certErr {
			f.logger.Error("fleetd: the server certificate cannot be loaded: new connections keep the one loaded before", "err", err)
		}
		f.certErr = err.Error()
	} else {
		f.cert, f.certErr = cert, ""
	}
	if f.auth.ClientCA != "" {
		if pool, err := f.loadPool(); err != nil {
			if err.Error() != f.poolErr {
				f.logger.Error("fleetd: the client CA bundle cannot be loaded: no client certificate is accepted until it is fixed", "err", err)
			}
			f.pool, f.poolErr = f.noClient, err.Error()
		} else {
			f.pool, f.poolErr = pool, ""
		}
	}
	f.current = f.build()
	return f.current
}

// serverConfig is the listener's configuration: each connection gets
// config's.
func (f *tlsFiles) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return f.config(), nil },
	}
}
