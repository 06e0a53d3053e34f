package natsforward

import (
	"fmt"
	"strings"

	"github.com/canonlog/canonlog/eventlog"
)

// DefaultSubject is the subject template of a Config without one.
const DefaultSubject = "canonlog.{kind}.{host}"

// MaxSubjectBytes bounds a rendered subject: the NATS server closes a
// connection whose protocol line is longer than its max_control_line
// (4 KiB by default), so a longer subject fails its event with
// ErrUnpublishable instead.
const MaxSubjectBytes = 2048

// EmptyToken stands for an empty host or rollout id in a subject.
const EmptyToken = "_"

// field is a placeholder of the subject template.
type field int

const (
	literal field = iota
	fieldKind
	fieldHost
	fieldRollout
)

var placeholders = map[string]field{"{kind}": fieldKind, "{host}": fieldHost, "{rollout}": fieldRollout}

// part is a piece of a compiled template: literal text or a placeholder.
type part struct {
	f   field
	lit string
}

// template is a compiled subject template.
type template struct {
	src   string
	parts []part
}

// parseTemplate compiles a subject template: dot-separated tokens of
// literal text and the placeholders {kind}, {host} and {rollout}.
func parseTemplate(s string) (*template, error) {
	if s == "" {
		return nil, fmt.Errorf("the subject template is empty")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return nil, fmt.Errorf("subject template %q has an empty token: no leading, trailing or doubled dots", s)
		}
	}
	t := &template{src: s}
	rest := s
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			open = len(rest)
		}
		if lit := rest[:open]; lit != "" {
			if i := strings.IndexAny(lit, "}*> \t\r\n"); i >= 0 {
				return nil, fmt.Errorf("subject template %q holds %q: a subject to publish to takes no wildcards, whitespace or stray braces; "+
					"placeholders are {kind}, {host} and {rollout}", s, lit[i])
			}
			t.parts = append(t.parts, part{f: literal, lit: lit})
		}
		rest = rest[open:]
		if rest == "" {
			break
		}
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("subject template %q: a brace is never closed; placeholders are {kind}, {host} and {rollout}", s)
		}
		f, ok := placeholders[rest[:end+1]]
		if !ok {
			return nil, fmt.Errorf("subject template %q: unknown placeholder %s; placeholders are {kind}, {host} and {rollout}", s, rest[:end+1])
		}
		t.parts = append(t.parts, part{f: f})
		rest = rest[end+1:]
	}
	return t, nil
}

// render appends ev's subject to b.
func (t *template) render(b []byte, ev *eventlog.Event) []byte {
	for _, p := range t.parts {
		switch p.f {
		case literal:
			b = append(b, p.lit...)
		case fieldKind:
			b = appendToken(b, string(ev.Kind))
		case fieldHost:
			b = appendToken(b, ev.HostID)
		case fieldRollout:
			b = appendToken(b, ev.RolloutID)
		}
	}
	return b
}

// pattern returns the subjects the template renders for kind ("" for any
// kind) as a NATS subject filter: each token holding a placeholder other
// than the given kind becomes "*".
func (t *template) pattern(kind eventlog.Kind) string {
	var b []byte
	wild := false // the current token holds a placeholder that varies
	flush := func(tok []byte) {
		if wild {
			b = append(b, '*')
		} else {
			b = append(b, tok...)
		}
	}
	var tok []byte
	for _, p := range t.parts {
		switch {
		case p.f == literal:
			segs := strings.Split(p.lit, ".")
			for i, seg := range segs {
				if i > 0 {
					flush(tok)
					b = append(b, '.')
					tok, wild = tok[:0], false
				}
				tok = append(tok, seg...)
			}
		case p.f == fieldKind && kind != "":
			tok = appendToken(tok, string(kind))
		default:
			wild = true
		}
	}
	flush(tok)
	return string(b)
}

// isToken reports whether c stays as it is in a subject token.
func isToken(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

const hexDigits = "0123456789ABCDEF"

// appendToken appends s as a subject token: ASCII letters, digits, '-'
// and '_' stay, every other byte becomes %XX (upper-case hex), so that a
// dot, a wildcard, whitespace or any non-ASCII byte can never split or
// widen a subject; url.PathUnescape gives the id back. The empty string
// becomes EmptyToken, and an id that is EmptyToken itself is escaped
// ("%5F"), so that the two never share a token.
func appendToken(b []byte, s string) []byte {
	switch s {
	case "":
		return append(b, EmptyToken...)
	case EmptyToken:
		return append(b, "%5F"...)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; isToken(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		}
	}
	return b
}

// appendHeaderValue appends s as a header value: bytes up to and
// including the space, DEL and '%' become %XX, so that a value survives
// the header encoding (which ends a value at a line break and trims its
// spaces) exactly; url.PathUnescape gives it back.
func appendHeaderValue(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '%' {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			b = append(b, c)
		}
	}
	return b
}

// subjectCovered reports whether every subject matching pattern (a
// subject filter whose wildcards are only "*") also matches filter, one
// of a stream's subjects.
func subjectCovered(pattern, filter string) bool {
	pt, ft := strings.Split(pattern, "."), strings.Split(filter, ".")
	for i, f := range ft {
		if f == ">" {
			return len(pt) > i
		}
		if i >= len(pt) {
			return false
		}
		if f != "*" && f != pt[i] {
			return false
		}
	}
	return len(pt) == len(ft)
}
