package canonlogcli

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDocumentedErrors produces the error lines docs/cli.md quotes, as a
// user at a shell would: files named relative to the working directory,
// whole messages compared, so that rewording one fails here until the page
// quotes the new words (internal/docs holds the page to this file). Not
// parallel: it changes the working directory.
func TestDocumentedErrors(t *testing.T) {
	t.Chdir(t.TempDir())
	const db = "--database-url=sqlite:canonlog.db"
	effect := `{"kind":"effect","payload":{}}` + "\n"
	write := func(name, content string) {
		require.NoError(t, os.WriteFile(name, []byte(content), 0o600))
	}
	stderr := func(stdin string, args ...string) string {
		t.Helper()
		r := runIn(t, stdin, append(args, db)...)
		require.NotEqual(t, 0, r.code, "%v: %s", args, r.out)
		return r.err
	}
	r := runIn(t, "", "migrate", "up", db)
	require.Equal(t, 0, r.code, r.err)

	require.Equal(t, `canonlog: rebuild: unknown projection "probe_failure": known projections are probe_failures
Run 'canonlog rebuild --help' for usage.
`, stderr("", "rebuild", "probe_failure"))

	write("events.ndjson", strings.Repeat(effect, 16)+`{"kind":"effect","payload":{"a":`+"\n")
	require.Equal(t, "canonlog: append from events.ndjson: line 17: not valid JSON: it ends inside its JSON object (cut short?); nothing was appended\n",
		stderr("", "append", "--file", "events.ndjson"))

	write("events.ndjson", effect+"{\"kind\":\"effect\",\"host_id\":\"h\xff\",\"payload\":{}}\n")
	require.Equal(t, `canonlog: append from events.ndjson: line 2: field "host_id" is not valid UTF-8 (byte 0xff) at byte 30: it cannot be stored as given; nothing was appended`+"\n",
		stderr("", "append", "--file", "events.ndjson"))

	write("events.ndjson", strings.Repeat(effect, 4)+`{"kind":"effect","HOST_ID":"h","payload":{}}`+"\n")
	require.Equal(t, `canonlog: append from events.ndjson: line 5: unknown field "HOST_ID": field names are case-sensitive (did you mean "host_id"?); nothing was appended`+"\n",
		stderr("", "append", "--file", "events.ndjson"))

	require.Equal(t, "canonlog: append from standard input: line 2: not valid JSON: invalid character '}' looking for beginning of value (at byte 33); nothing was appended\n",
		stderr(effect+`{"kind":"effect","payload":{"x":}}`+"\n", "append", "--file", "-"))

	require.Equal(t, `canonlog: migrate down drops what is listed above, the event log with every event included: add --yes if you mean it
Run 'canonlog migrate down --help' for usage.
`, stderr("", "migrate", "down"))

	// The password stays hidden; a URL that does not parse is refused
	// before anything is dialled, so the message is the same everywhere.
	r = runIn(t, "", "status", "--database-url", "postgres://app:s3cret@db:54x2/app")
	require.Equal(t, exitFailure, r.code)
	require.Equal(t, "canonlog: eventlog: database URL postgres://app:xxxxx@db:54x2/app is malformed: invalid port after host "+
		"(percent-encode special characters such as @ : / ? # % in the user name and password) "+
		"(check --database-url, CANONLOG_DATABASE_URL or DATABASE_URL, and that the database is running)\n", r.err)
}
