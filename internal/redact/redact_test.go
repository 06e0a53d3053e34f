package redact

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestURL: every form a database URL or connection string can take, with
// the secret it carries; the redacted text never holds the secret, and
// shows what it safely can.
func TestURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		secrets  []string // none of these may be in the output
		want     string   // the exact output
	}{
		// The user part.
		{"user password", "postgres://svc:s3cret@db:5432/fleet?sslmode=disable", []string{"s3cret"}, "postgres://svc:xxxxx@db:5432/fleet?sslmode=disable"},
		{"postgresql scheme", "postgresql://svc:s3cret@db/fleet", []string{"s3cret"}, "postgresql://svc:xxxxx@db/fleet"},
		{"percent-encoded password", "postgres://svc:s%40cr%2Fet@db/fleet", []string{"s%40cr%2Fet", "s@cr/et"}, "postgres://svc:xxxxx@db/fleet"},
		{"password holding @", "postgres://svc:p@ss@db/fleet", []string{"p@ss"}, "postgres://svc:xxxxx@db/fleet"},
		{"password holding :", "postgres://svc:pa:ss@db/fleet", []string{"pa:ss"}, "postgres://svc:xxxxx@db/fleet"},
		{"empty user, password", "postgres://:s3cret@db/fleet", []string{"s3cret"}, "postgres://:xxxxx@db/fleet"},
		{"user alone", "postgres://svc@db/fleet", nil, "postgres://svc@db/fleet"},
		{"no user", "postgres://db/fleet?sslmode=disable", nil, "postgres://db/fleet?sslmode=disable"},
		{"other scheme", "mysql://root:s3cret@db/x", []string{"s3cret"}, "mysql://root:xxxxx@db/x"},

		// Unparsable, shown as far as it is safe: the error's subject stays visible.
		{"bad escape in password", "postgres://svc:s3cret%zz@db/fleet", []string{"s3cret%zz", "s3cret"}, "postgres://svc:xxxxx@db/fleet"},
		{"bad port", "postgres://svc:s3cret@db:port/fleet", []string{"s3cret"}, "postgres://svc:xxxxx@db:port/fleet"},

		// A password holding an unencoded / ? or # spills out of the user
		// part: url.Parse would read part of it as a port or path.
		{"password holding /", "postgres://svc:12/s3cret@db/fleet", []string{"12/s3cret", "s3cret"}, "postgres://(hidden)"},
		{"password holding ?", "postgres://svc:12?s3cret@db/fleet", []string{"12?s3cret", "s3cret"}, "postgres://(hidden)"},
		{"password holding #", "postgres://svc:12#s3cret@db/fleet", []string{"12#s3cret", "s3cret"}, "postgres://(hidden)"},
		{"parameter holding #", "postgres://svc@db/fleet?password=ab#s3cret", []string{"ab#s3cret", "s3cret"}, "postgres://(hidden)"},
		{"parameter holding @", "postgres://svc@db/fleet?password=s3@cret", []string{"s3@cret"}, "postgres://(hidden)"},

		// Query parameters.
		{"password parameter", "postgres://svc@db/fleet?password=s3cret&sslmode=disable", []string{"s3cret"}, "postgres://svc@db/fleet?password=xxxxx&sslmode=disable"},
		{"password parameter last", "postgres://svc@db/fleet?sslmode=disable&password=s3cret", []string{"s3cret"}, "postgres://svc@db/fleet?sslmode=disable&password=xxxxx"},
		{"password parameter encoded", "postgres://svc@db/fleet?password=s%26c+ret", []string{"s%26c+ret", "s&c ret"}, "postgres://svc@db/fleet?password=xxxxx"},
		{"password parameter, key encoded", "postgres://svc@db/fleet?pass%77ord=s3cret", []string{"s3cret"}, "postgres://svc@db/fleet?pass%77ord=xxxxx"},
		{"password parameter upper case", "postgres://svc@db/fleet?PASSWORD=s3cret&Password=t0psecret", []string{"s3cret", "t0psecret"}, "postgres://svc@db/fleet?PASSWORD=xxxxx&Password=xxxxx"},
		{"sslpassword", "postgres://svc@db/fleet?sslpassword=s3cret", []string{"s3cret"}, "postgres://svc@db/fleet?sslpassword=xxxxx"},
		{"inline sslkey", "postgres://svc@db/fleet?sslinline=true&sslkey=-----BEGIN+KEY-----s3cret", []string{"s3cret"}, "postgres://svc@db/fleet?sslinline=true&sslkey=xxxxx"},
		{"password twice", "postgres://svc:s3cret@db/fleet?password=t0psecret", []string{"s3cret", "t0psecret"}, "postgres://svc:xxxxx@db/fleet?password=xxxxx"},
		{"semicolon separated", "postgres://svc@db/fleet?sslmode=disable;password=s3cret", []string{"s3cret"}, "postgres://svc@db/fleet?sslmode=disable;password=xxxxx"},
		{"empty password parameter", "postgres://svc@db/fleet?password=&sslmode=disable", nil, "postgres://svc@db/fleet?password=&sslmode=disable"},

		// SQLite: a path and driver parameters.
		{"sqlite file", "sqlite:canonlog.db", nil, "sqlite:canonlog.db"},
		{"sqlite memory", "sqlite::memory:", nil, "sqlite::memory:"},
		{"sqlite absolute", "sqlite:///var/lib/canonlog.db?_pragma=busy_timeout(5000)", nil, "sqlite:///var/lib/canonlog.db?_pragma=busy_timeout(5000)"},
		{"sqlite path with spaces", "sqlite:/tmp/my logs/canonlog.db", nil, "sqlite:/tmp/my logs/canonlog.db"},
		{"sqlite password parameter", "sqlite:x.db?password=s3cret", []string{"s3cret"}, "sqlite:x.db?password=xxxxx"},
		{"file uri", "file:x.db?mode=memory&cache=shared", nil, "file:x.db?mode=memory&cache=shared"},

		// key=value connection strings.
		{"keywords", "host=127.0.0.1 user=u password=s3cret dbname=x", []string{"s3cret"}, "host=127.0.0.1 user=u password=xxxxx dbname=x"},
		{"keywords quoted", "host=db password='se cret' dbname=x", []string{"se cret", "'se cret'"}, "host=db password=xxxxx dbname=x"},
		{"keywords quoted with escapes", `password='it\'s s3cret' host=db`, []string{`it's s3cret`, `it\'s s3cret`, "s3cret"}, "password=xxxxx host=db"},
		{"keywords escaped space", `password=s3\ cret host=db`, []string{"s3 cret", `s3\ cret`}, "password=xxxxx host=db"},
		{"keywords spaces around =", "host=db password = s3cret", []string{"s3cret"}, "host=db password = xxxxx"},
		{"keywords tabs and newlines", "host=db\tpassword=s3cret\nuser=u", []string{"s3cret"}, "host=db\tpassword=xxxxx\nuser=u"},
		{"keywords upper case", "host=db PASSWORD=s3cret", []string{"s3cret"}, "host=db PASSWORD=xxxxx"},
		{"keywords last", "host=db password=s3cret", []string{"s3cret"}, "host=db password=xxxxx"},
		{"keywords unterminated quote", "host=db password='s3cret", []string{"s3cret"}, "(hidden)"},
		{"keywords missing =", "host=db password s3cret", []string{"s3cret"}, "(hidden)"},
		{"keywords trailing backslash", `host=db password=s3cret\`, []string{"s3cret"}, "(hidden)"},

		// Nothing to parse.
		{"opaque scheme", "postgres:svc:s3cret@db", []string{"s3cret"}, "postgres:(hidden)"},
		{"bare word", "s3cret", []string{"s3cret"}, "(hidden)"},
		{"empty", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := URL(tc.in)
			for _, s := range tc.secrets {
				require.NotContains(t, got, s)
			}
			require.Equal(t, tc.want, got)
			// A message quoting the URL, as it is or as *url.Error quotes
			// it, is redacted the same way; not a bare word, which
			// Message leaves alone (TestError).
			msg := Message(fmt.Sprintf("open %s: %v", tc.in, &url.Error{Op: "parse", URL: tc.in, Err: errors.New("x")}), tc.in)
			if !strings.ContainsAny(tc.in, "\t\n\\") && strings.ContainsAny(tc.in, ":@=") { // %q escapes the former
				for _, s := range tc.secrets {
					require.NotContains(t, msg, s)
				}
			}
		})
	}
}

// TestURLKeepsTheRest: what is not a secret parameter stays, so
// the output still says which database it is.
func TestURLKeepsTheRest(t *testing.T) {
	t.Parallel()
	in := "postgres://svc:s3cret@db.internal:6543/fleet?search_path=app&application_name=fleetd&passfile=/etc/pgpass"
	require.Equal(t, "postgres://svc:xxxxx@db.internal:6543/fleet?search_path=app&application_name=fleetd&passfile=/etc/pgpass", URL(in))
}

func TestError(t *testing.T) {
	t.Parallel()
	raw := "postgres://u@db/x?password=s%26cret&sslmode=disable"
	cause := errors.New("eventlog: connect to " + raw + ": connection refused (password s&cret)")
	err := Error(cause, raw)
	require.ErrorIs(t, err, cause)
	require.Equal(t, "eventlog: connect to postgres://u@db/x?password=xxxxx&sslmode=disable: connection refused (password xxxxx)", err.Error())
	require.Equal(t, cause, Error(cause, "sqlite:x.db"), "nothing to hide: the same error")

	// Secrets are found in free text too, as written and decoded.
	for raw, secret := range map[string]string{
		"postgres://svc:s%40cret@db/x":                  "s@cret",
		"postgres://svc:12/s3cret@db/x":                 "12/s3cret",
		"postgres://svc@db/x?sslpassword=s3cret":        "s3cret",
		"host=db password='se cret'":                    "se cret",
		"host=db password='s3cret":                      "s3cret",
		"postgres://svc:s3cret@db/x?password=t0psecret": "t0psecret",
	} {
		msg := Message("pq: something quoted "+secret+" and "+raw, raw)
		require.NotContains(t, msg, secret, raw)
		require.Contains(t, msg, "pq: something quoted xxxxx and ", raw)
	}
	require.NoError(t, Error(nil, raw))

	// A bare word is not hunted in free text either: the message names
	// the schemes it knows.
	require.Equal(t, "database URL (hidden): unknown scheme: use postgres://…",
		Message("database URL "+URL("postgres")+": unknown scheme: use postgres://…", "postgres"))

	// A secret shorter than 3 bytes is hidden in the URL but not hunted
	// in free text, where it would garble every word holding it.
	require.Equal(t, "dial postgres://u:xxxxx@db/x: a b", Message("dial postgres://u:ab@db/x: a b", "postgres://u:ab@db/x"))
}

func TestParseReason(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://svc:se/cret@db/fleet": "invalid port after host",
		"postgres://svc:s3cret%zz@db/x":   "invalid URL escape",
		"postgres://svc:s3cret@d b/x":     "invalid character in host name",
	} {
		_, err := url.Parse(in)
		require.Error(t, err, in)
		require.Equal(t, want, ParseReason(err), in)
	}
}
