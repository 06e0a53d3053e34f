package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// A tokens file holds fleetd's bearer tokens, one a line, hashed:
//
//	# fleetd tokens: id role name issued sha256
//	4f3a9c1e agent web-5 2026-12-01T04:00:00Z sha256:9b1f…
//	b07d22aa operator gate 2026-12-01T04:01:00Z sha256:03cc…
//
// A token is "fleetd_<id>_<secret>": the id finds its line, and the
// SHA-256 of the whole token must equal the line's. The secret is 32
// random bytes, so a fast hash is enough: there is no dictionary to try,
// and a request pays one hash. The file reveals no token; it says who
// may hold one. `fleetd token issue|revoke|list` edit it; fleetd reads
// it again when it changes, so a revocation takes effect within a
// second, without a restart.

// Roles a credential grants.
const (
	// roleAgent posts the agent events of one host: its name.
	roleAgent = "agent"
	// roleOperator reads the rollouts, posts gate decisions and reads
	// the metrics.
	roleOperator = "operator"
)

const (
	tokenPrefix    = "fleetd_"
	tokenIDBytes   = 4
	tokenSecretLen = 32
	tokenHashTag   = "sha256:"
	tokensHeader   = "# fleetd tokens: id role name issued sha256 (fleetd token issue|revoke|list edit this file)"
)

// tokenEntry is a line of a tokens file.
type tokenEntry struct {
	ID     string
	Role   string
	Name   string // the agent's host, or the operator's name
	Issued time.Time
	Hash   [sha256.Size]byte
}

func (e tokenEntry) line() string {
	return fmt.Sprintf("%s %s %s %s %s%s", e.ID, e.Role, e.Name, e.Issued.UTC().Format(time.RFC3339), tokenHashTag, hex.EncodeToString(e.Hash[:]))
}

// checkName says why name cannot name an agent's host or an operator in
// a tokens file, or returns nil. An agent's is its host_id, and host
// ids are names: letters, digits, dots, hyphens and underscores (see
// checkHostID).
func checkName(role, name string) error {
	switch role {
	case roleAgent:
		return checkHostID(name)
	case roleOperator:
		if err := checkHostID(name); err != nil {
			return fmt.Errorf("operator name %q: use letters, digits, dots, hyphens and underscores", name)
		}
		return nil
	}
	return fmt.Errorf("role %q: use %s or %s", role, roleAgent, roleOperator)
}

// parseTokens reads a tokens file's content. Blank lines and lines
// starting with # are skipped; any other line that is not a token entry
// is an error naming its line: a file that cannot be read whole is
// refused whole, never half applied.
func parseTokens(data []byte) ([]tokenEntry, error) {
	var out []tokenEntry
	ids := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseTokenLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if prev, dup := ids[e.ID]; dup {
			return nil, fmt.Errorf("line %d: token id %s is also on line %d", n, e.ID, prev)
		}
		ids[e.ID] = n
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func parseTokenLine(line string) (tokenEntry, error) {
	f := strings.Fields(line)
	if len(f) != 5 {
		return tokenEntry{}, fmt.Errorf("%d fields, want 5: id role name issued sha256:hash", len(f))
	}
	e := tokenEntry{ID: f[0], Role: f[1], Name: f[2]}
	if raw, err := hex.DecodeString(e.ID); err != nil || len(raw) != tokenIDBytes {
		return tokenEntry{}, fmt.Errorf("token id %q: want %d hex digits", e.ID, 2*tokenIDBytes)
	}
	if err := checkName(e.Role, e.Name); err != nil {
		return tokenEntry{}, err
	}
	var err error
	if e.Issued, err = time.Parse(time.RFC3339, f[3]); err != nil {
		return tokenEntry{}, fmt.Errorf("issued %q: want an RFC 3339 time", f[3])
	}
	h, ok := strings.CutPrefix(f[4], tokenHashTag)
	raw, err := hex.DecodeString(h)
	if !ok || err != nil || len(raw) != sha256.Size {
		return tokenEntry{}, fmt.Errorf("hash %q: want sha256: and %d hex digits", f[4], 2*sha256.Size)
	}
	copy(e.Hash[:], raw)
	return e, nil
}

// newToken makes a token for role and name, and its entry.
func newToken(role, name string, now time.Time) (token string, e tokenEntry, err error) {
	if err := checkName(role, name); err != nil {
		return "", tokenEntry{}, err
	}
	buf := make([]byte, tokenIDBytes+tokenSecretLen)
	if _, err := rand.Read(buf); err != nil {
		return "", tokenEntry{}, err
	}
	e = tokenEntry{ID: hex.EncodeToString(buf[:tokenIDBytes]), Role: role, Name: name, Issued: now.UTC().Truncate(time.Second)}
	token = tokenPrefix + e.ID + "_" + base64.RawURLEncoding.EncodeToString(buf[tokenIDBytes:])
	e.Hash = sha256.Sum256([]byte(token))
	return token, e, nil
}

// tokenID is the id part of a token, or "" when token is not shaped
// like one of fleetd's.
func tokenID(token string) string {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return ""
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 2*tokenIDBytes || base64.RawURLEncoding.DecodedLen(len(secret)) != tokenSecretLen {
		return ""
	}
	return id
}

// tokenSet is a parsed tokens file, by id.
type tokenSet map[string]tokenEntry

// lookup returns the entry token was issued as, if it is one.
func (s tokenSet) lookup(token string) (tokenEntry, bool) {
	e, ok := s[tokenID(token)]
	if !ok {
		return tokenEntry{}, false
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], e.Hash[:]) != 1 {
		return tokenEntry{}, false
	}
	return e, true
}

// tokensFile is a tokens file as the server reads it: again whenever it
// changes, looked at no more than once a second.
type tokensFile struct {
	path string
	now  func() time.Time

	mu    sync.Mutex
	watch fileWatch
	set   tokenSet
	err   error // why the file as it is now cannot be used
}

// openTokensFile reads path: it must exist and be valid, so that a
// server never starts with credentials it cannot check.
func openTokensFile(path string, now func() time.Time) (*tokensFile, error) {
	f := &tokensFile{path: path, now: now, watch: newFileWatch(now(), path)}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *tokensFile) reload() error {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("tokens file: %w", err)
	}
	entries, err := parseTokens(data)
	if err != nil {
		return fmt.Errorf("tokens file %s: %w", f.path, err)
	}
	set := make(tokenSet, len(entries))
	for _, e := range entries {
		set[e.ID] = e
	}
	f.set = set
	return nil
}

// lookup checks token against the file as it is now. A file that became
// unreadable or invalid accepts no token until it is fixed (err says
// why, once per change): failing closed keeps a revocation from being
// undone by a typo.
func (f *tokensFile) lookup(token string) (e tokenEntry, ok bool, changeErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// A file that could not be used is read again each time it is due,
	// changed or not: a fix that leaves size and time alone (chmod)
	// counts too.
	if due, changed := f.watch.look(f.now()); changed || due && f.err != nil {
		err := f.reload()
		if err != nil && (f.err == nil || f.err.Error() != err.Error()) {
			changeErr = err
		}
		f.err = err
	}
	if f.err != nil {
		return tokenEntry{}, false, changeErr
	}
	e, ok = f.set.lookup(token)
	return e, ok, changeErr
}

// readTokensFile reads the entries of path for the token commands; a
// missing file holds none.
func readTokensFile(path string) ([]tokenEntry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	entries, err := parseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}

// writeTokensFile replaces path with entries, atomically (a server
// reading it sees the old file or the new, never half of one), readable
// by its owner only.
func writeTokensFile(path string, entries []tokenEntry) error {
	var b strings.Builder
	b.WriteString(tokensHeader + "\n")
	for _, e := range entries {
		b.WriteString(e.line() + "\n")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	if _, err := tmp.WriteString(b.String()); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
