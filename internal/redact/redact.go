// Package redact hides the secrets of a database URL before it is printed,
// logged or quoted in an error. URL is the one place that knows where a
// secret can sit; eventlog.RedactURL is its public face for applications,
// and everything inside canonlog (eventlog's errors, app's logs, the
// commands' output) goes through it.
//
//	redact.URL("postgres://svc:s3cret@db/app?sslmode=disable")
//	// postgres://svc:xxxxx@db/app?sslmode=disable
//
// The forms and their rules:
//
//   - scheme://user:password@host/path?params — the password of the user
//     part, and the value of every secret parameter (below). When the text
//     is ambiguous — an '@' after the host part, or any '#' — a password
//     holding a character that should have been percent-encoded has spilled
//     into the host, path or fragment: only "scheme://(hidden)" is shown.
//   - sqlite:PATH?params and file:PATH?params — the path as given, the
//     parameters as above (SQLite has no password; the rule is uniform).
//   - key=value connection strings (host=db password='se cret') — the value
//     of every secret key, quoted or not, parsed as lib/pq parses them. One
//     that does not parse (an unterminated quote) is "(hidden)" whole.
//   - anything else: "scheme:(hidden)" when it starts with a scheme,
//     otherwise "(hidden)".
//
// A secret parameter or key is one whose name contains "password" in any
// case (password, sslpassword, a mistyped Password), or is sslkey (with
// sslinline it holds the private key itself). lib/pq reads only the
// lowercase names, but hiding a misspelt one costs nothing and a secret
// the operator meant to pass is still a secret.
package redact

import (
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Hidden replaces every secret.
const Hidden = "xxxxx"

// minScrub is the shortest secret Message replaces in free text: replacing
// every "a" of a message would garble it and point at the password anyway.
const minScrub = 3

var scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)

// URL returns raw with every secret it carries replaced by xxxxx, or a
// placeholder when it cannot tell where the secrets are (see the package
// documentation). The rest stays as the caller wrote it.
func URL(raw string) string {
	s, _ := scan(raw)
	return s
}

// Message returns msg with raw replaced by URL(raw) and every secret raw
// carries (as written, and percent-decoded or unquoted) replaced by xxxxx:
// the last line of defence for a message built from parts that might
// have quoted the URL, such as a driver's error.
func Message(msg, raw string) string {
	if raw == "" {
		return msg
	}
	red, secrets := scan(raw)
	// A bare word (--database-url postgres) is hidden in URL's output by
	// rule, but replacing it in free text would garble the message around
	// it ("use (hidden)://…").
	if red != raw && strings.ContainsAny(raw, ":@=") {
		msg = strings.ReplaceAll(msg, raw, red)
	}
	// Longest first, so that a secret holding a shorter one is replaced
	// whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		if len(s) >= minScrub {
			msg = strings.ReplaceAll(msg, s, Hidden)
		}
	}
	return msg
}

// Error returns err with its message passed through Message; the result
// still unwraps to err. It returns err itself when nothing was hidden.
func Error(err error, raw string) error {
	if err == nil {
		return nil
	}
	msg := Message(err.Error(), raw)
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// quoted matches what net/url quotes in its errors: pieces of the URL.
var quoted = regexp.MustCompile(` ?"(?:[^"\\]|\\.)*"`)

// ParseReason returns why url.Parse refused a URL without the pieces of
// the URL its error quotes: *url.Error holds the whole URL, and its reason
// may quote part of a password that held a '/' or '?' (`invalid port
// ":se" after host`).
func ParseReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return quoted.ReplaceAllString(err.Error(), "")
}

// scan returns raw redacted and the secrets it hid.
func scan(raw string) (string, []string) {
	switch {
	case raw == "":
		return "", nil
	case strings.HasPrefix(raw, "sqlite:"), strings.HasPrefix(raw, "file:"):
		path, query, ok := strings.Cut(raw, "?")
		if !ok {
			return raw, nil
		}
		query, secrets := params(query)
		return path + "?" + query, secrets
	}
	if m := scheme.FindString(raw); m != "" {
		if rest, ok := strings.CutPrefix(raw[len(m):], "//"); ok {
			return hierarchical(m+"//", rest)
		}
		return m + "(hidden)", looseSecrets(raw[len(m):])
	}
	if strings.Contains(raw, "=") {
		return keywords(raw)
	}
	return "(hidden)", nil
}

// hierarchical redacts scheme://rest, splitting rest the way url.Parse
// (and so lib/pq) does: the query at the first '?', the host part up to the
// first '/', the user part up to the host part's last '@', the password
// after the user part's first ':'. Done on the text rather than on a
// parsed URL so that an unparsable one is still shown (its bad port, say)
// and nothing is re-escaped.
func hierarchical(prefix, rest string) (string, []string) {
	beforeQuery, query, hasQuery := strings.Cut(rest, "?")
	end := strings.IndexByte(beforeQuery, '/')
	if end < 0 {
		end = len(beforeQuery)
	}
	authority, path := beforeQuery[:end], beforeQuery[end:]
	if strings.Contains(rest, "#") || strings.Contains(path, "@") || strings.Contains(query, "@") {
		return prefix + "(hidden)", looseSecrets(rest)
	}
	var secrets []string
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		if user, password, ok := strings.Cut(authority[:at], ":"); ok {
			authority = user + ":" + Hidden + authority[at:]
			secrets = append(secrets, decoded(password)...)
		}
	}
	out := prefix + authority + path
	if hasQuery {
		q, s := params(query)
		out += "?" + q
		secrets = append(secrets, s...)
	}
	return out, secrets
}

// params hides the values of the secret parameters of a URL query,
// keeping its order and encoding. Both '&' and ';' separate: net/url
// refuses ';', but hiding after it too is cheaper than being sure.
func params(query string) (string, []string) {
	var (
		b       strings.Builder
		secrets []string
	)
	for {
		i := strings.IndexAny(query, "&;")
		part, sep := query, ""
		if i >= 0 {
			part, sep = query[:i], query[i:i+1]
		}
		if k, v, ok := strings.Cut(part, "="); ok && v != "" && secretName(unescape(k)) {
			part = k + "=" + Hidden
			secrets = append(secrets, decoded(v)...)
		}
		b.WriteString(part + sep)
		if i < 0 {
			return b.String(), secrets
		}
		query = query[i+1:]
	}
}

// looseSecrets is what Message scrubs for text URL could not take apart:
// the password candidate before the last '@', its pieces (a '/', '?' or
// '#' in it sends the pieces to different parts of the URL, and an error
// may quote one), and the values of secret parameters.
func looseSecrets(rest string) []string {
	var secrets []string
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if _, password, ok := strings.Cut(rest[:at], ":"); ok {
			secrets = append(secrets, decoded(password)...)
			secrets = append(secrets, strings.FieldsFunc(password, func(r rune) bool { return strings.ContainsRune("/?#:", r) })...)
		}
	}
	for _, part := range strings.FieldsFunc(rest, func(r rune) bool { return strings.ContainsRune("?&;#", r) || unicode.IsSpace(r) }) {
		if k, v, ok := strings.Cut(part, "="); ok && secretName(unescape(k)) {
			secrets = append(secrets, decoded(strings.Trim(v, "'"))...)
		}
	}
	return secrets
}

// keywords redacts a key=value connection string, scanned by lib/pq's
// rules: whitespace between pairs and around '='; a value in single quotes
// may hold whitespace; a backslash escapes the next character.
func keywords(raw string) (string, []string) {
	type span struct{ from, to int }
	var (
		hide    []span
		secrets []string
		i       int
	)
	peek := func() (rune, int) { return utf8.DecodeRuneInString(raw[i:]) }
	skipSpace := func() {
		for i < len(raw) {
			r, n := peek()
			if !unicode.IsSpace(r) {
				return
			}
			i += n
		}
	}
	for {
		skipSpace()
		if i == len(raw) {
			break
		}
		keyFrom := i
		for i < len(raw) {
			r, n := peek()
			if r == '=' || unicode.IsSpace(r) {
				break
			}
			i += n
		}
		key := raw[keyFrom:i]
		skipSpace()
		if i == len(raw) || raw[i] != '=' {
			return "(hidden)", looseSecrets(raw)
		}
		i++
		skipSpace()
		valFrom := i
		var val strings.Builder
		if i < len(raw) && raw[i] == '\'' {
			i++
			for {
				if i == len(raw) {
					return "(hidden)", looseSecrets(raw)
				}
				r, n := peek()
				i += n
				if r == '\'' {
					break
				}
				if r == '\\' && i < len(raw) {
					r, n = peek()
					i += n
				}
				val.WriteRune(r)
			}
		} else {
			for i < len(raw) {
				r, n := peek()
				if unicode.IsSpace(r) {
					break
				}
				i += n
				if r == '\\' {
					if i == len(raw) {
						return "(hidden)", looseSecrets(raw)
					}
					r, n = peek()
					i += n
				}
				val.WriteRune(r)
			}
		}
		if secretName(key) && val.Len() > 0 {
			hide = append(hide, span{valFrom, i})
			secrets = append(secrets, val.String(), raw[valFrom:i])
		}
	}
	var b strings.Builder
	last := 0
	for _, s := range hide {
		b.WriteString(raw[last:s.from] + Hidden)
		last = s.to
	}
	b.WriteString(raw[last:])
	return b.String(), secrets
}

// secretName reports whether a parameter or key holds a secret.
func secretName(name string) bool {
	name = strings.ToLower(strings.TrimSpace(name))
	return strings.Contains(name, "password") || name == "sslkey"
}

// unescape percent-decodes s, or returns it as is when it does not decode.
func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// decoded returns s as written and, when they differ, as percent-decoded
// in a path and in a query ('+' is a space only there).
func decoded(s string) []string {
	out := []string{s}
	if u, err := url.PathUnescape(s); err == nil && u != s {
		out = append(out, u)
	}
	if u, err := url.QueryUnescape(s); err == nil && u != s {
		out = append(out, u)
	}
	return out
}
