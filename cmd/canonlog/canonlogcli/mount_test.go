package canonlogcli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// TestMountedCommands: an application's own commands sit next to
// canonlog's, share the root's --database-url and streams, and their
// errors come out as canonlog's do, naming the application's binary.
func TestMountedCommands(t *testing.T) {
	t.Parallel()
	// newConfig builds the tree afresh for each run, as cobra commands
	// keep the flags they parsed.
	newConfig := func() *Config {
		var loud bool
		hello := &cobra.Command{
			Use:   "hello",
			Short: "Say which database the commands open",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				url, err := cmd.Flags().GetString("database-url")
				if err != nil {
					return err
				}
				if url == "fail" {
					return errors.New("hello failed\non two lines")
				}
				if loud {
					url = strings.ToUpper(url)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "hello %s\n", url)
				return nil
			},
		}
		hello.Flags().BoolVar(&loud, "loud", false, "shout")
		return &Config{Name: "myctl", Commands: []*cobra.Command{hello}}
	}
	run := func(args ...string) result {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), newConfig(), args, strings.NewReader(""), &out, &errOut)
		return result{out.String(), errOut.String(), code}
	}

	r := run("--help")
	require.Equal(t, 0, r.code, r.err)
	for _, want := range []string{"myctl [command]", "hello", "Say which database", "rebuild", "verify", "migrate"} {
		require.Contains(t, r.out, want)
	}

	r = run("--database-url", "sqlite:x.db", "hello", "--loud")
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, "hello SQLITE:X.DB\n", r.out)

	r = run("hello", "--database-url", "fail")
	require.Equal(t, exitFailure, r.code)
	require.Equal(t, "myctl: hello failed; on two lines\n", r.err, "one line, named after the binary")

	r = run("hello", "--bogus")
	require.Equal(t, exitUsage, r.code)
	require.Equal(t, "myctl: unknown flag: --bogus\nRun 'myctl hello --help' for usage.\n", r.err)

	r = run("hello", "extra")
	require.Equal(t, exitUsage, r.code, r.err)
}

// TestDefaultDatabaseURL: without --database-url, CANONLOG_DATABASE_URL
// or DATABASE_URL, the commands open Config.DefaultDatabaseURL. Not
// parallel: it clears environment variables.
func TestDefaultDatabaseURL(t *testing.T) {
	t.Setenv("CANONLOG_DATABASE_URL", "")
	t.Setenv("DATABASE_URL", "")
	for _, backend := range dbtest.Backends {
		t.Run(backend, func(t *testing.T) {
			b := dbtest.New(t, backend)
			cfg := &Config{Name: "myctl", DefaultDatabaseURL: b.URL}
			run := func(args ...string) result {
				var out, errOut bytes.Buffer
				code := Run(context.Background(), cfg, args, strings.NewReader(""), &out, &errOut)
				return result{out.String(), errOut.String(), code}
			}

			r := run("--help")
			require.Contains(t, r.out, "then "+b.URL+")", "the flag's help names the default")
			r = run("migrate", "up")
			require.Equal(t, 0, r.code, r.err)
			r = run("append", "--kind", "effect", "--payload", "{}")
			require.Equal(t, 0, r.code, r.err)

			var n int
			require.NoError(t, b.Open(t).Get(&n, `SELECT COUNT(*) FROM event_log`))
			require.Equal(t, 1, n, "the default database holds the event")
		})
	}
}
