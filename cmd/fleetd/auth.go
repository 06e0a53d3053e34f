package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// AuthConfig says how fleetd authenticates its callers. With neither a
// tokens file nor a client CA, nobody is authenticated: fleetd then
// serves only on a loopback address, unless InsecureNoAuth.
type AuthConfig struct {
	// TokensFile is a file of bearer tokens (fleetd token issue): an
	// agent's names its host, an operator's grants the operator
	// endpoints. Defaults to none.
	TokensFile string
	// TLSCert and TLSKey are the server's certificate and key (PEM
	// files): fleetd serves HTTPS. They and ClientCA are read again when
	// they change (see tlsFiles). Defaults to plain HTTP.
	TLSCert, TLSKey string
	// ClientCA is a PEM bundle of the CAs that sign the agents' client
	// certificates (mutual TLS; needs TLSCert). A certificate's subject
	// common name is its agent's host; one whose subject organization is
	// OperatorOrganization is an operator's. Defaults to none.
	ClientCA string
	// InsecureNoAuth lets fleetd serve without authentication on an
	// address that is not a loopback one: anyone who can reach it may
	// post any host's events and read every rollout. Defaults to false.
	InsecureNoAuth bool
}

// OperatorOrganization, as a client certificate's subject organization
// (O), makes the certificate an operator's.
const OperatorOrganization = "fleetd:operators"

// enabled says whether any caller is authenticated.
func (c AuthConfig) enabled() bool { return c.TokensFile != "" || c.ClientCA != "" }

func (c AuthConfig) validate() error {
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key go together: the server's certificate and its key")
	case c.ClientCA != "" && c.TLSCert == "":
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked over TLS")
	}
	return nil
}

// check validates c and reads its files (certificates, tokens), so that
// serve refuses a bad configuration before it opens the database.
func (c AuthConfig) check() error {
	if err := c.validate(); err != nil {
		return err
	}
	if c.TLSCert != "" {
		if _, err := newTLSFiles(c, slog.Default(), time.Now); err != nil {
			return err
		}
	}
	if c.TokensFile != "" {
		if _, err := openTokensFile(c.TokensFile, time.Now); err != nil {
			return fmt.Errorf("--tokens-file: %w", err)
		}
	}
	return nil
}

// principal is who a request comes from.
type principal struct {
	Role string // roleAgent or roleOperator; "" when nobody is authenticated
	Name string // the agent's host, or the operator's name
	Via  string // "token" or "certificate"
}

type principalKey struct{}

// caller is the principal of the request ctx belongs to, or the zero
// principal when fleetd authenticates nobody.
func caller(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// authenticator checks credentials and roles. Without a tokens file and
// a client CA it lets every request through as nobody in particular.
type authenticator struct {
	enabled bool
	tokens  *tokensFile // nil: no bearer tokens
	mtls    bool
	logger  *slog.Logger
}

func newAuthenticator(cfg AuthConfig, logger *slog.Logger) (*authenticator, error) {
	a := &authenticator{enabled: cfg.enabled(), mtls: cfg.ClientCA != "", logger: logger}
	if cfg.TokensFile != "" {
		var err error
		if a.tokens, err = openTokensFile(cfg.TokensFile, time.Now); err != nil {
			return nil, fmt.Errorf("--tokens-file: %w", err)
		}
	}
	return a, nil
}

// The reasons authenticate refuses a request; their text is the answer's.
var (
	errNoCredential  = errors.New("no credential: send Authorization: Bearer <token> or a client certificate")
	errBadToken      = errors.New("the bearer token is not one fleetd issued, or it was revoked")
	errBadCredential = errors.New("the client certificate names no host: its subject common name must be the agent's host_id")
)

// authenticate finds who r comes from. A bearer token wins over a client
// certificate, so that an operator token works from a host that also
// holds its agent certificate.
func (a *authenticator) authenticate(r *http.Request) (principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, _ := strings.Cut(h, " ")
		if a.tokens == nil || !strings.EqualFold(scheme, "Bearer") {
			return principal{}, errBadToken
		}
		e, ok, changed := a.tokens.lookup(strings.TrimSpace(token))
		if changed != nil {
			a.logger.Error("fleetd: the tokens file cannot be used: every token is refused until it is fixed", "err", changed)
		}
		if !ok {
			return principal{}, errBadToken
		}
		return principal{Role: e.Role, Name: e.Name, Via: "token"}, nil
	}
	if a.mtls && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		cert := r.TLS.VerifiedChains[0][0]
		name := cert.Subject.CommonName
		if checkHostID(name) != nil {
			return principal{}, errBadCredential
		}
		role := roleAgent
		if slices.Contains(cert.Subject.Organization, OperatorOrganization) {
			role = roleOperator
		}
		return principal{Role: role, Name: name, Via: "certificate"}, nil
	}
	return principal{}, errNoCredential
}

// require serves h to callers holding role: 401 without a valid
// credential, 403 with another role's. With authentication off, it
// serves everyone.
func (a *authenticator) require(role string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.enabled {
			h(w, r)
			return
		}
		p, err := a.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fleetd"`)
			writeJSON(w, http.StatusUnauthorized, errorResponse{Error: err.Error()})
			return
		}
		if p.Role != role {
			writeJSON(w, http.StatusForbidden, errorResponse{Error: fmt.Sprintf("%s %q may not %s: it needs an %s credential", p.Role, p.Name, routeAction(r), role)})
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

func (a *authenticator) requireAgent(h http.HandlerFunc) http.HandlerFunc {
	return a.require(roleAgent, h)
}

func (a *authenticator) requireOperator(h http.HandlerFunc) http.HandlerFunc {
	return a.require(roleOperator, h)
}

// routeAction says what a request would have done, for a 403.
func routeAction(r *http.Request) string {
	if r.Method == http.MethodGet {
		return "read " + r.URL.Path
	}
	return "post to " + r.URL.Path
}

// checkHostID says why s cannot be an agent's host_id, or returns nil.
// Host ids are names, as certificates and inventories spell them:
// letters, digits, dots, hyphens and underscores. No slash, so that an
// event id namespaced as "<host>/…" belongs to one host only.
func checkHostID(s string) error {
	if s == "" {
		return errors.New("host_id is empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("host_id %q holds %q: a host id is letters, digits, dots, hyphens and underscores", s, rune(c))
		}
	}
	return nil
}

// agentEventID is where an agent's event id is stored: in its host's
// namespace, "<host>/<event_id>", unless it is there already. No other
// host can name an event there (host ids hold no slash), so an agent can
// neither take another's event ids nor learn of its events by guessing
// them.
func agentEventID(host, id string) string {
	if strings.HasPrefix(id, host+"/") {
		return id
	}
	return host + "/" + id
}

// gateEventIDPrefix namespaces the gate decisions' event ids: no host's
// namespace starts with it, as host ids hold no colon.
const gateEventIDPrefix = "gate:"

// gateEventID is where a gate decision's event id is stored.
func gateEventID(id string) string {
	if strings.HasPrefix(id, gateEventIDPrefix) {
		return id
	}
	return gateEventIDPrefix + id
}

// sameOrigin refuses a request a web page sent to another site's fleetd:
// one with an Origin header that is not the request's own host. Agents
// and operators' tools send none; browsers always do on a cross-site
// write.
func sameOrigin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || !strings.EqualFold(u.Host, r.Host) {
				writeJSON(w, http.StatusForbidden, errorResponse{Error: "cross-origin request refused: fleetd's API is not for web pages of other sites"})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// loopbackHost refuses, when fleetd authenticates nobody, requests whose
// Host is not a loopback name: a web page that rebinds its own domain to
// 127.0.0.1 reaches a loopback fleetd under that domain's name.
func loopbackHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopbackHost(r.Host) {
			writeJSON(w, http.StatusMisdirectedRequest, errorResponse{Error: fmt.Sprintf("host %q is not a loopback name: fleetd without authentication answers only localhost, 127.0.0.1 and [::1]", r.Host)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
