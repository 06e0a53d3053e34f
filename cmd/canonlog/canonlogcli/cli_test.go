package canonlogcli

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

// result is one run of the command line.
type result struct {
	out, err string
	code     int
}

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	r := runIn(t, "", args...)
	return r.out, r.err, r.code
}

// runIn runs the command tree with stdin as standard input.
func runIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), nil, args, strings.NewReader(stdin), &out, &errOut)
	return result{out.String(), errOut.String(), code}
}

// cli is a database and a way to run commands against it.
type cli struct {
	t       *testing.T
	backend dbtest.Backend
	url     string
	pool    *sqlx.DB // opened by db on first use
}

func newCLI(t *testing.T, backend string) *cli {
	t.Helper()
	b := dbtest.New(t, backend)
	return &cli{t: t, backend: b, url: b.URL}
}

// run runs args with --database-url set; stdin optional.
func (c *cli) run(stdin string, args ...string) result {
	c.t.Helper()
	return runIn(c.t, stdin, append([]string{"--database-url", c.url}, args...)...)
}

// ok runs args and requires exit 0.
func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	r := c.run(stdin, args...)
	require.Equal(c.t, 0, r.code, "%v: stderr: %s", args, r.err)
	return r.out
}

func (c *cli) migrated() *cli {
	c.t.Helper()
	c.ok("", "migrate", "up")
	return c
}

// db returns the test's own pool on its database, opened on first use and
// kept: a pool per call would hold a connection per call until the test
// ends.
func (c *cli) db() *sqlx.DB {
	c.t.Helper()
	if c.pool == nil {
		c.pool = c.backend.Open(c.t)
	}
	return c.pool
}

// counts returns the number of events and of probe_failures rows.
func (c *cli) counts() (events, rows int) {
	c.t.Helper()
	db := c.db()
	require.NoError(c.t, db.Get(&events, `SELECT COUNT(*) FROM event_log`))
	require.NoError(c.t, db.Get(&rows, `SELECT COUNT(*) FROM probe_failures`))
	return events, rows
}

// withPassword returns the test's PostgreSQL URL carrying a password,
// which the trust-authenticated test server ignores.
func withPassword(t *testing.T, raw, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

var _ io.Writer = (*testio.SyncBuffer)(nil)

// usageHint is the line a usage error ends with.
var usageHint = regexp.MustCompile(`Run '[a-z -]+ --help' for usage\.\n$`)

// withoutHint returns stderr without the usage hint it may end with.
func withoutHint(stderr string) string { return usageHint.ReplaceAllString(stderr, "") }
