package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

// authClient is a client of a started fleetd, with its credential.
type authClient struct {
	t      *testing.T
	base   string
	client *http.Client
	token  string
	header http.Header
}

// authAnswer is a decoded answer of fleetd's.
type authAnswer struct {
	posted
	Hosts json.RawMessage `json:"hosts"`
}

// send sends a request; err is the transport's (a refused TLS handshake).
func (c *authClient) send(method, path, body string) (int, authAnswer, error) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, authAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	var a authAnswer
	if path != "/metrics" {
		require.Equal(c.t, "application/json", resp.Header.Get("Content-Type"), "%s %s → %d %s", method, path, resp.StatusCode, raw)
		require.NoError(c.t, json.Unmarshal(raw, &a), string(raw))
	}
	if resp.StatusCode == http.StatusUnauthorized {
		require.Equal(c.t, `Bearer realm="fleetd"`, resp.Header.Get("WWW-Authenticate"))
	}
	return resp.StatusCode, a, nil
}

func (c *authClient) do(method, path, body string) (int, authAnswer) {
	c.t.Helper()
	status, a, err := c.send(method, path, body)
	require.NoError(c.t, err)
	return status, a
}

// on is c reporting to t.
func (c *authClient) on(t *testing.T) *authClient {
	d := *c
	d.t = t
	return &d
}

// with is c holding another token.
func (c *authClient) with(token string) *authClient {
	d := *c
	d.token = token
	return &d
}

// issue issues a token into path through fleetd's command line.
func issue(t *testing.T, path, roleFlag, name string) string {
	t.Helper()
	out, errOut, code := runFleetd(context.Background(), nil, "token", "issue", "--tokens-file", path, roleFlag, name)
	require.Equal(t, exitOK, code, errOut)
	return strings.TrimSpace(out)
}

// setupAuth starts fleetd with auth on a fresh database of backend.
func setupAuth(t *testing.T, backend string, auth AuthConfig) *fixture {
	t.Helper()
	return setupService(t, backend, Config{Auth: auth, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
}

func TestTokens(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		tokens := filepath.Join(t.TempDir(), "tokens")
		web5 := issue(t, tokens, "--agent", "web-5")
		web9 := issue(t, tokens, "--agent", "web-9")
		gate := issue(t, tokens, "--operator", "gate")
		f := setupAuth(t, backend, AuthConfig{TokensFile: tokens})
		anon := &authClient{t: t, base: "http://" + f.server.Addr(), client: http.DefaultClient}
		events := func() int64 { return lastSeq(t, f.log) }

		t.Run("no_credential_401", func(t *testing.T) {
			before := events()
			for _, tc := range []struct{ method, path, body string }{
				{"POST", "/v1/agent-events", probeBody("web-9", "r-1", "web-9/probe/1", "CIS-1")},
				{"GET", "/v1/rollouts/r-1/summary", ""},
				{"GET", "/v1/rollouts/r-1/failing-hosts?control=CIS-1", ""},
				{"GET", "/v1/rollouts/r-1/hosts", ""},
				{"POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("d-1", "advance", 0)},
			} {
				status, a := anon.do(tc.method, tc.path, tc.body)
				require.Equal(t, http.StatusUnauthorized, status, "%s %s", tc.method, tc.path)
				require.Contains(t, a.Error, "no credential")
			}
			status, _ := anon.do("GET", "/metrics", "")
			require.Equal(t, http.StatusUnauthorized, status)
			for _, bad := range []string{"nonsense", web5 + "x", "fleetd_00000000_" + strings.Repeat("A", 43), strings.Replace(web5, "_", "-", 1)} {
				status, a := anon.with(bad).do("POST", "/v1/agent-events", probeBody("web-5", "r-1", "web-5/probe/1", "CIS-1"))
				require.Equal(t, http.StatusUnauthorized, status, bad)
				require.Contains(t, a.Error, "not one fleetd issued")
			}
			status, _ = anon.do("GET", "/healthz", "")
			require.Equal(t, http.StatusOK, status, "health checks need no credential")
			require.Equal(t, before, events(), "nothing was written")
		})

		t.Run("agent_posts_its_own_host_only", func(t *testing.T) {
			anon := anon.on(t)
			before := events()
			status, a := anon.with(web5).do("POST", "/v1/agent-events", probeBody("web-9", "r-1", "web-9/probe/1", "CIS-1"))
			require.Equal(t, http.StatusForbidden, status)
			require.Equal(t, "host_id", a.Field)
			require.Contains(t, a.Error, `host_id "web-9" is not this agent's host ("web-5"`)
			require.Equal(t, before, events(), "the forged failure was not stored")

			status, a = anon.with(web5).do("POST", "/v1/agent-events", probeBody("web-5", "r-1", "web-5/probe/1", "CIS-1"))
			require.Equal(t, http.StatusCreated, status, a.Error)
			ev, err := f.log.Get(ctx, a.Seq)
			require.NoError(t, err)
			require.Equal(t, "web-5/probe/1", ev.EventID, "an id already in the host's namespace is stored as given")
		})

		t.Run("roles", func(t *testing.T) {
			anon := anon.on(t)
			before := events()
			for _, path := range []string{"/v1/rollouts/r-1/summary", "/v1/rollouts/r-1/hosts", "/metrics"} {
				status, _ := anon.with(web5).do("GET", path, "")
				require.Equal(t, http.StatusForbidden, status, "an agent reads no rollout: %s", path)
				status, _ = anon.with(gate).do("GET", path, "")
				require.Equal(t, http.StatusOK, status, "an operator does: %s", path)
			}
			status, a := anon.with(web5).do("POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("d-1", "advance", 0))
			require.Equal(t, http.StatusForbidden, status)
			require.Contains(t, a.Error, "needs an operator credential")
			status, a = anon.with(gate).do("POST", "/v1/agent-events", probeBody("web-5", "r-1", "web-5/probe/9", "CIS-1"))
			require.Equal(t, http.StatusForbidden, status, "an operator posts no agent event")
			require.Contains(t, a.Error, "needs an agent credential")
			require.Equal(t, before, events())

			var sum authAnswer
			status, sum = anon.with(gate).do("GET", "/v1/rollouts/r-1/summary", "")
			require.Equal(t, http.StatusOK, status)
			status, a = anon.with(gate).do("POST", "/v1/rollouts/r-1/gate-decisions", decisionBody("d-1", "halt", sum.Seq))
			require.Equal(t, http.StatusCreated, status, a.Error)
			ev, err := f.log.Get(ctx, a.Seq)
			require.NoError(t, err)
			require.Equal(t, "gate:d-1", ev.EventID, "gate decisions have a namespace of their own")
		})

		// The attack: web-9 takes web-5's next event id with a passing
		// result, hoping web-5's failure gets 409 and never reaches the gate.
		t.Run("event_ids_are_per_host", func(t *testing.T) {
			anon := anon.on(t)
			status, a := anon.with(web9).do("POST", "/v1/agent-events", passBody("web-9", "r-2", "web-5/probe/2"))
			require.Equal(t, http.StatusCreated, status, a.Error)
			ev, err := f.log.Get(ctx, a.Seq)
			require.NoError(t, err)
			require.Equal(t, "web-9/web-5/probe/2", ev.EventID, "stored in web-9's namespace")
			status, a = anon.with(web9).do("POST", "/v1/agent-events", passBody("web-9", "r-2", "probe/3"))
			require.Equal(t, http.StatusCreated, status, a.Error)

			for _, id := range []string{"web-5/probe/2", "probe/3"} {
				status, a = anon.with(web5).do("POST", "/v1/agent-events", probeBody("web-5", "r-2", id, "CIS-2"))
				require.Equal(t, http.StatusCreated, status, "web-5's own %s is its own: %s", id, a.Error)
				require.False(t, a.Duplicate)
			}
			status, a = anon.with(gate).do("GET", "/v1/rollouts/r-2/failing-hosts?control=CIS-2", "")
			require.Equal(t, http.StatusOK, status)
			require.JSONEq(t, `["web-5"]`, string(a.Hosts), "the real failure reached the gate")

			// A conflict is within the caller's own namespace: it speaks of
			// the caller's own event.
			status, a = anon.with(web9).do("POST", "/v1/agent-events", probeBody("web-9", "r-2", "probe/3", "CIS-2"))
			require.Equal(t, http.StatusConflict, status)
			require.Contains(t, a.Error, `event_id "probe/3" already belongs to event`)
			mine, err := f.log.Get(ctx, a.Seq)
			require.NoError(t, err)
			require.Equal(t, "web-9", mine.HostID)
		})

		t.Run("revoked_token_is_refused", func(t *testing.T) {
			anon := anon.on(t)
			_, errOut, code := runFleetd(ctx, nil, "token", "revoke", "--tokens-file", tokens, "web-9")
			require.Equal(t, exitOK, code, errOut)
			// Until fleetd reads the file again (within a second), the token
			// is still web-9's: 403 on an operator's route, then 401.
			require.Eventually(t, func() bool {
				status, _ := anon.with(web9).do("GET", "/metrics", "")
				return status == http.StatusUnauthorized
			}, 10*time.Second, 50*time.Millisecond, "fleetd reads the tokens file again")
			before := events()
			status, _ := anon.with(web9).do("POST", "/v1/agent-events", passBody("web-9", "r-3", "probe/after-revoke"))
			require.Equal(t, http.StatusUnauthorized, status)
			require.Equal(t, before, events(), "the revoked token wrote nothing")
			status, a := anon.with(web5).do("POST", "/v1/agent-events", passBody("web-5", "r-3", "probe/after-revoke"))
			require.Equal(t, http.StatusCreated, status, "web-5's token stays: %s", a.Error)

			// A broken file refuses every token until it is fixed.
			good, err := os.ReadFile(tokens)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(tokens, append(good, "garbage\n"...), 0o600))
			require.Eventually(t, func() bool {
				status, _ := anon.with(gate).do("GET", "/healthz", "")
				require.Equal(t, http.StatusOK, status)
				status, _ = anon.with(gate).do("GET", "/v1/rollouts/r-3/summary", "")
				return status == http.StatusUnauthorized
			}, 10*time.Second, 50*time.Millisecond)
			require.NoError(t, os.WriteFile(tokens, good, 0o600))
			require.Eventually(t, func() bool {
				status, _ := anon.with(gate).do("GET", "/v1/rollouts/r-3/summary", "")
				return status == http.StatusOK
			}, 10*time.Second, 50*time.Millisecond)
		})

		t.Run("cross_origin_refused", func(t *testing.T) {
			anon := anon.on(t)
			before := events()
			c := anon.with(web5)
			c.header = http.Header{"Origin": {"https://evil.example"}}
			status, a := c.do("POST", "/v1/agent-events", passBody("web-5", "r-4", "probe/origin"))
			require.Equal(t, http.StatusForbidden, status)
			require.Contains(t, a.Error, "cross-origin")
			// What a page can send without the browser asking first.
			c = anon.with(web5)
			c.header = http.Header{"Content-Type": {"text/plain"}}
			status, _ = c.do("POST", "/v1/agent-events", passBody("web-5", "r-4", "probe/plain"))
			require.Equal(t, http.StatusUnsupportedMediaType, status)
			require.Equal(t, before, events())
		})
	})
}

func TestNoAuth(t *testing.T) {
	t.Parallel()
	t.Run("refuses_a_network_address", func(t *testing.T) {
		t.Parallel()
		db := "sqlite:" + filepath.Join(t.TempDir(), "fleetd.db")
		_, errOut, code := runFleetd(context.Background(), nil, "serve", "--addr", "0.0.0.0:0", "--database-url", db)
		require.Equal(t, exitFailure, code)
		require.Contains(t, errOut, "refusing to serve without authentication on")
		require.Contains(t, errOut, "--insecure-no-auth")
	})
	t.Run("insecure_flag_allows_it", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		addr, stderr, done := serving(t, ctx, "--insecure-no-auth", "--addr", "0.0.0.0:0", "--database-url", "sqlite:"+filepath.Join(t.TempDir(), "fleetd.db"))
		require.Contains(t, stderr.String(), "INSECURE")
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		resp, err := http.Get("http://127.0.0.1:" + port + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		cancel()
		require.Equal(t, exitOK, <-done)
	})
	t.Run("loopback_says_so", func(t *testing.T) {
		dbtest.Run(t, func(t *testing.T, backend string) {
			logs := &testio.SyncBuffer{}
			f := setupService(t, backend, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			require.Contains(t, logs.String(), "no authentication configured: listening on loopback only")
			c := &authClient{t: t, base: "http://" + f.server.Addr(), client: http.DefaultClient}
			status, a := c.do("POST", "/v1/agent-events", passBody("web-5", "r-1", "probe/1"))
			require.Equal(t, http.StatusCreated, status, a.Error)

			// A page that rebinds its own name to 127.0.0.1 reaches fleetd
			// under that name.
			before := lastSeq(t, f.log)
			req, err := http.NewRequest("POST", c.base+"/v1/agent-events", strings.NewReader(passBody("web-5", "r-1", "probe/2")))
			require.NoError(t, err)
			req.Host = "evil.example:8080"
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusMisdirectedRequest, resp.StatusCode)
			require.Equal(t, before, lastSeq(t, f.log))
		})
	})
}

// pki is a test certificate authority and the files fleetd reads.
type pki struct {
	t    *testing.T
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &pki{t: t, dir: t.TempDir(), ca: ca, key: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	return p
}

// caFile writes the CA's certificate and returns its path.
func (p *pki) caFile() string {
	path := filepath.Join(p.dir, "ca.pem")
	require.NoError(p.t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw}), 0o600))
	return path
}

// issue signs a certificate: a server's for 127.0.0.1, or a client's
// named cn, with orgs, valid from notBefore to notAfter.
func (p *pki) issue(cn string, orgs []string, server bool, notBefore, notAfter time.Time) tls.Certificate {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(p.t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(p.t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	require.NoError(p.t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// files writes cert's certificate and key and returns their paths.
func (p *pki) files(name string, cert tls.Certificate) (certPath, keyPath string) {
	p.t.Helper()
	certPath, keyPath = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(p.t, err)
	require.NoError(p.t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600))
	require.NoError(p.t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return certPath, keyPath
}

func TestMutualTLS(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		now := time.Now()
		ca := newPKI(t, "fleet CA")
		other := newPKI(t, "another CA")
		certPath, keyPath := ca.files("server", ca.issue("fleetd", nil, true, now.Add(-time.Hour), now.Add(time.Hour)))
		tokens := filepath.Join(t.TempDir(), "tokens")
		gate := issue(t, tokens, "--operator", "gate")
		f := setupAuth(t, backend, AuthConfig{TLSCert: certPath, TLSKey: keyPath, ClientCA: ca.caFile(), TokensFile: tokens})

		// client presents certs whatever CAs fleetd asks for, as a
		// misconfigured or hostile agent would.
		client := func(certs ...tls.Certificate) *authClient {
			cfg := &tls.Config{RootCAs: ca.pool}
			if len(certs) > 0 {
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
			}
			tr := &http.Transport{TLSClientConfig: cfg}
			t.Cleanup(tr.CloseIdleConnections)
			return &authClient{t: t, base: "https://" + f.server.Addr(), client: &http.Client{Transport: tr}}
		}
		web5 := client(ca.issue("web-5", nil, false, now.Add(-time.Hour), now.Add(time.Hour)))
		events := func() int64 { return lastSeq(t, f.log) }

		status, a := web5.do("POST", "/v1/agent-events", probeBody("web-5", "r-1", "probe/1", "CIS-1"))
		require.Equal(t, http.StatusCreated, status, a.Error)
		ev, err := f.log.Get(context.Background(), a.Seq)
		require.NoError(t, err)
		require.Equal(t, "web-5/probe/1", ev.EventID)

		before := events()
		status, a = web5.do("POST", "/v1/agent-events", probeBody("web-9", "r-1", "probe/1", "CIS-1"))
		require.Equal(t, http.StatusForbidden, status)
		require.Contains(t, a.Error, "from its certificate")
		status, _ = web5.do("GET", "/v1/rollouts/r-1/summary", "")
		require.Equal(t, http.StatusForbidden, status, "an agent's certificate reads nothing")

		status, _ = client().do("POST", "/v1/agent-events", probeBody("web-5", "r-1", "probe/2", "CIS-1"))
		require.Equal(t, http.StatusUnauthorized, status, "TLS without a client certificate")

		for name, cert := range map[string]tls.Certificate{
			"expired":     ca.issue("web-5", nil, false, now.Add(-2*time.Hour), now.Add(-time.Hour)),
			"not_yet":     ca.issue("web-5", nil, false, now.Add(time.Hour), now.Add(2*time.Hour)),
			"wrong_ca":    other.issue("web-5", nil, false, now.Add(-time.Hour), now.Add(time.Hour)),
			"wrong_usage": ca.issue("web-5", nil, true, now.Add(-time.Hour), now.Add(time.Hour)),
		} {
			_, _, err := client(cert).send("POST", "/v1/agent-events", probeBody("web-5", "r-1", "probe/3", "CIS-1"))
			require.Error(t, err, "%s: the handshake is refused", name)
		}
		status, a = client(ca.issue("web/5", nil, false, now.Add(-time.Hour), now.Add(time.Hour))).do("POST", "/v1/agent-events", probeBody("web-5", "r-1", "probe/4", "CIS-1"))
		require.Equal(t, http.StatusUnauthorized, status, "a common name that is no host id")
		require.Contains(t, a.Error, "names no host")
		require.Equal(t, before, events(), "nothing refused was written")

		op := client(ca.issue("gate-2", []string{OperatorOrganization}, false, now.Add(-time.Hour), now.Add(time.Hour)))
		status, a = op.do("GET", "/v1/rollouts/r-1/failing-hosts?control=CIS-1", "")
		require.Equal(t, http.StatusOK, status, a.Error)
		require.JSONEq(t, `["web-5"]`, string(a.Hosts))
		status, _ = op.do("POST", "/v1/agent-events", probeBody("gate-2", "r-1", "probe/5", "CIS-1"))
		require.Equal(t, http.StatusForbidden, status, "an operator's certificate posts no agent event")
		status, _ = client().with(gate).do("GET", "/v1/rollouts/r-1/summary", "")
		require.Equal(t, http.StatusOK, status, "an operator token works over TLS without a certificate")

		// Plain HTTP to the TLS port gets no authAnswer of fleetd's.
		resp, err := http.Post("http://"+f.server.Addr()+"/v1/agent-events", "application/json", strings.NewReader(passBody("web-5", "r-1", "probe/6")))
		if err == nil {
			resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		}
		require.Equal(t, before, events())
	})
}

func TestAuthConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "fleetd.db")
	garbage := filepath.Join(dir, "garbage")
	require.NoError(t, os.WriteFile(garbage, []byte("not a token line\n"), 0o600))
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"cert_without_key":     {[]string{"--tls-cert", "x.pem"}, "--tls-cert and --tls-key go together"},
		"client_ca_needs_tls":  {[]string{"--tls-client-ca", "ca.pem"}, "--tls-client-ca needs --tls-cert"},
		"missing_tokens_file":  {[]string{"--tokens-file", filepath.Join(dir, "none")}, "no such file"},
		"invalid_tokens_file":  {[]string{"--tokens-file", garbage}, "line 1: 4 fields, want 5"},
		"missing_certificates": {[]string{"--tls-cert", filepath.Join(dir, "x.pem"), "--tls-key", filepath.Join(dir, "x.key")}, "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			_, errOut, code := runFleetd(ctx, nil, append([]string{"serve", "--addr", "127.0.0.1:0", "--database-url", db}, tc.args...)...)
			require.Equal(t, exitFailure, code, errOut)
			require.Contains(t, errOut, tc.want)
		})
	}
}

// TestTLSRotation: certificates rotated on disk take effect for new
// connections without a restart; a broken client CA bundle trusts no CA.
func TestTLSRotation(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		now := time.Now()
		ca, other := newPKI(t, "fleet CA"), newPKI(t, "next CA")
		serverCert := ca.issue("fleetd", nil, true, now.Add(-time.Hour), now.Add(time.Hour))
		certPath, keyPath := ca.files("server", serverCert)
		caPath := ca.caFile()
		f := setupAuth(t, backend, AuthConfig{TLSCert: certPath, TLSKey: keyPath, ClientCA: caPath})
		roots := x509.NewCertPool()
		roots.AddCert(ca.ca)
		roots.AddCert(other.ca)

		// as is a client holding cert, on a new connection each request.
		as := func(cert tls.Certificate) *authClient {
			tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}}
			t.Cleanup(tr.CloseIdleConnections)
			return &authClient{t: t, base: "https://" + f.server.Addr(), client: &http.Client{Transport: tr}}
		}
		// post posts as the holder of cert: the status, or 0 when the
		// handshake is refused.
		post := func(cert tls.Certificate, id string) int {
			status, a, err := as(cert).send("POST", "/v1/agent-events", passBody("web-5", "r-1", id))
			if err != nil {
				return 0
			}
			require.Contains(t, []int{http.StatusCreated, http.StatusOK}, status, a.Error)
			return status
		}
		// accepted says whether fleetd accepts cert's handshake, writing
		// nothing.
		accepted := func(cert tls.Certificate) bool {
			_, _, err := as(cert).send("GET", "/healthz", "")
			return err == nil
		}
		served := func() *big.Int {
			conn, err := tls.Dial("tcp", f.server.Addr(), &tls.Config{RootCAs: roots})
			require.NoError(t, err)
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0].SerialNumber
		}
		oldAgent := ca.issue("web-5", nil, false, now.Add(-time.Hour), now.Add(time.Hour))
		newAgent := other.issue("web-5", nil, false, now.Add(-time.Hour), now.Add(time.Hour))
		require.Equal(t, http.StatusCreated, post(oldAgent, "probe/1"))
		require.Zero(t, post(newAgent, "probe/2"), "the next CA is not trusted yet")

		// The server certificate: a new pair, the key written first.
		next := other.issue("fleetd", nil, true, now.Add(-time.Hour), now.Add(time.Hour))
		nextParsed, err := x509.ParseCertificate(next.Certificate[0])
		require.NoError(t, err)
		nextCert, nextKey := other.files("server-next", next)
		for _, mv := range [][2]string{{nextKey, keyPath}, {nextCert, certPath}} {
			data, err := os.ReadFile(mv[0])
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(mv[1], data, 0o600))
		}
		require.Eventually(t, func() bool { return served().Cmp(nextParsed.SerialNumber) == 0 }, 10*time.Second, 50*time.Millisecond)

		// The client CAs: the next CA instead of the first.
		nextCA, err := os.ReadFile(other.caFile())
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(caPath, nextCA, 0o600))
		require.Eventually(t, func() bool { return accepted(newAgent) }, 10*time.Second, 50*time.Millisecond)
		require.Equal(t, http.StatusCreated, post(newAgent, "probe/2"))
		require.False(t, accepted(oldAgent), "the first CA is no longer trusted")

		// A broken bundle trusts no CA; fixed, it trusts its CAs again.
		require.NoError(t, os.WriteFile(caPath, []byte("not PEM\n"), 0o600))
		require.Eventually(t, func() bool { return !accepted(newAgent) }, 10*time.Second, 50*time.Millisecond)
		before := lastSeq(t, f.log)
		require.Zero(t, post(newAgent, "probe/3"))
		require.Equal(t, before, lastSeq(t, f.log))
		require.NoError(t, os.WriteFile(caPath, nextCA, 0o600))
		require.Eventually(t, func() bool { return accepted(newAgent) }, 10*time.Second, 50*time.Millisecond)
		require.Equal(t, http.StatusCreated, post(newAgent, "probe/3"))
	})
}
