package probefailures

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// The JSON scanner of the fast path. Each function takes the payload and
// the index of the first byte of what it scans, and returns the index just
// past it, or -1 when the bytes there are not what encoding/json accepts
// (or nest too deeply). It accepts nothing that json.Valid refuses: the
// fast path's answer stands only for valid JSON, and everything else goes
// to the slow path, which lets encoding/json decide.

// maxScanDepth is how deeply the scanner follows nested arrays and objects
// before it gives up (and the slow path decides). It is the log's own
// limit, so every stored payload is within it, and far below
// encoding/json's 10,000.
const maxScanDepth = 1000

// Flags of a scanned string.
const (
	strEscaped  = 1 << iota // holds a backslash escape
	strNonASCII             // holds a byte ≥ 0x80, perhaps not valid UTF-8
)

// strPlain marks the bytes a string holds as they are: not a quote, not a
// backslash, not a control character (which JSON refuses raw), ASCII.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(p []byte, i int) int {
	for i < len(p) && p[i] <= ' ' && isSpace(p[i]) {
		i++
	}
	return i
}

// scanString scans the string whose opening quote is p[i] and returns the
// index past its closing quote and its flags. The content is p[i+1:end-1].
func scanString(p []byte, i int) (end int, flags uint8) {
	for i++; i < len(p); i++ {
		c := p[i]
		if strPlain[c] {
			continue
		}
		switch {
		case c == '"':
			return i + 1, flags
		case c == '\\':
			flags |= strEscaped
			if i+1 >= len(p) {
				return -1, 0
			}
			switch p[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+6 > len(p) || hex4(p[i+2:i+6]) < 0 {
					return -1, 0
				}
				i += 5
			default:
				return -1, 0
			}
		case c >= utf8.RuneSelf:
			// encoding/json takes any byte here and decodes invalid
			// UTF-8 as U+FFFD.
			flags |= strNonASCII
		default:
			return -1, 0 // a raw control character
		}
	}
	return -1, 0
}

// hex4 returns the value of four hex digits, or -1.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// scanNumber scans a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(p []byte, i int) int {
	if p[i] == '-' {
		i++
	}
	switch {
	case i >= len(p):
		return -1
	case p[i] == '0':
		i++
	case '1' <= p[i] && p[i] <= '9':
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	default:
		return -1
	}
	if i < len(p) && p[i] == '.' {
		if i++; i >= len(p) || !isDigit(p[i]) {
			return -1
		}
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		if i++; i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if i >= len(p) || !isDigit(p[i]) {
			return -1
		}
		for i++; i < len(p) && isDigit(p[i]); i++ {
		}
	}
	return i
}

// scanLiteral scans the literal lit (true, false or null).
func scanLiteral(p []byte, i int, lit string) int {
	if len(p)-i < len(lit) || string(p[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// afterValue scans what follows a member or element that ends at p[i],
// in an object or array closed by close: it returns the index of the next
// member or element and false, or the index past close and true; -1 when
// neither follows.
func afterValue(p []byte, i int, close byte) (int, bool) {
	if i = skipSpace(p, i); i >= len(p) {
		return -1, false
	}
	switch p[i] {
	case ',':
		return skipSpace(p, i+1), false
	case close:
		return i + 1, true
	}
	return -1, false
}

// skipValue scans the value at p[i], found inside depth arrays and
// objects.
func skipValue(p []byte, i, depth int) int {
	if i >= len(p) {
		return -1
	}
	switch c := p[i]; {
	case c == '"':
		end, _ := scanString(p, i)
		return end
	case c == '{':
		return skipObject(p, i, depth+1)
	case c == '[':
		return skipArray(p, i, depth+1)
	case c == 't':
		return scanLiteral(p, i, "true")
	case c == 'f':
		return scanLiteral(p, i, "false")
	case c == 'n':
		return scanLiteral(p, i, "null")
	case c == '-' || isDigit(c):
		return scanNumber(p, i)
	}
	return -1
}

// skipObject scans the object whose opening brace is p[i], itself the
// depth-th array or object open.
func skipObject(p []byte, i, depth int) int {
	if depth > maxScanDepth {
		return -1
	}
	if i = skipSpace(p, i+1); i < len(p) && p[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(p) || p[i] != '"' {
			return -1
		}
		if i, _ = scanString(p, i); i < 0 {
			return -1
		}
		if i = skipSpace(p, i); i >= len(p) || p[i] != ':' {
			return -1
		}
		if i = skipValue(p, skipSpace(p, i+1), depth); i < 0 {
			return -1
		}
		var closed bool
		if i, closed = afterValue(p, i, '}'); i < 0 || closed {
			return i
		}
	}
}

// skipArray scans the array whose opening bracket is p[i], itself the
// depth-th array or object open.
func skipArray(p []byte, i, depth int) int {
	if depth > maxScanDepth {
		return -1
	}
	if i = skipSpace(p, i+1); i < len(p) && p[i] == ']' {
		return i + 1
	}
	for {
		if i = skipValue(p, i, depth); i < 0 {
			return -1
		}
		var closed bool
		if i, closed = afterValue(p, i, ']'); i < 0 || closed {
			return i
		}
	}
}

// appendUnquoted appends the decoded content s of a string that
// scanString accepted, exactly as encoding/json decodes it into a Go
// string: invalid UTF-8 and unpaired surrogates become U+FFFD.
func appendUnquoted(b, s []byte, flags uint8) []byte {
	if flags&strEscaped == 0 && (flags&strNonASCII == 0 || utf8.Valid(s)) {
		return append(b, s...)
	}
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			switch s[r+1] {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := hex4(s[r+2:])
				r += 6
				if utf16.IsSurrogate(rr) {
					// A high surrogate takes the low one that follows
					// as another \u escape; anything else is U+FFFD,
					// and what follows is decoded on its own.
					if r+6 <= len(s) && s[r] == '\\' && s[r+1] == 'u' {
						if dec := utf16.DecodeRune(rr, hex4(s[r+2:])); dec != unicode.ReplacementChar {
							b = utf8.AppendRune(b, dec)
							r += 6
							continue
						}
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			default: // '"', '\\', '/'
				b = append(b, s[r+1])
			}
			r += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			b = utf8.AppendRune(b, rr)
			r += size
		}
	}
	return b
}
