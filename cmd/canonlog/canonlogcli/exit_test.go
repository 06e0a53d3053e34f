package canonlogcli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

// commandPaths returns the argument path of every command of the stock
// tree ({} for the root, {"migrate", "up"}, …), hidden ones left out.
func commandPaths(t *testing.T) map[string]*cobra.Command {
	t.Helper()
	g := &globals{cfg: (*Config)(nil).withDefaults(), stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	paths := map[string]*cobra.Command{}
	var walk func(cmd *cobra.Command, path []string)
	walk = func(cmd *cobra.Command, path []string) {
		if cmd.Hidden {
			return
		}
		paths[strings.Join(path, " ")] = cmd
		for _, sub := range cmd.Commands() {
			walk(sub, append(slices.Clone(path), sub.Name()))
		}
	}
	walk(newRootCommand(g), nil)
	require.Greater(t, len(paths), 15)
	return paths
}

// TestExitUsageEveryCommand: every command of the tree answers a usage
// error — an unknown flag, a word it takes for no argument, a number out
// of a flag's bounds — with exit 2, one line, and a hint naming its own
// help; nothing touches the database (a SQLite file that does not exist
// stays so).
func TestExitUsageEveryCommand(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "none.db")
	url := "sqlite:" + db
	usage := func(t *testing.T, path string, args ...string) string {
		t.Helper()
		r := runWith(t, nil, append([]string{"--database-url", url}, args...)...)
		require.Equal(t, exitUsage, r.code, "%q: %s", args, r.err)
		require.Empty(t, r.out, "%q", args)
		msg, hint, ok := strings.Cut(r.err, "\n")
		require.True(t, ok, "%q: %q", args, r.err)
		require.True(t, strings.HasPrefix(msg, "canonlog: "), "%q: %q", args, r.err)
		require.Equal(t, fmt.Sprintf("Run '%s --help' for usage.\n", strings.TrimSpace("canonlog "+path)), hint, "%q", args)
		return msg
	}
	for path, cmd := range commandPaths(t) {
		words := strings.Fields(path)
		t.Run("unknown flag/"+path, func(t *testing.T) {
			t.Parallel()
			msg := usage(t, path, append(slices.Clone(words), "--no-such-flag")...)
			require.Equal(t, "canonlog: unknown flag: --no-such-flag", msg)
		})
		// rebuild and verify take projection names; help, a topic.
		if !slices.Contains([]string{"rebuild", "verify", "help"}, path) {
			t.Run("extra argument/"+path, func(t *testing.T) {
				t.Parallel()
				msg := usage(t, path, append(slices.Clone(words), "extra-arg")...)
				require.Contains(t, msg, `unknown command "extra-arg"`)
			})
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			a, ok := f.Annotations[boundsAnnotation]
			if !ok {
				return
			}
			lo, _ := strconv.ParseInt(a[0], 10, 64)
			hi, _ := strconv.ParseInt(a[1], 10, 64)
			bad := []int64{lo - 1}
			if lo-1 == 0 && a[2] != "" {
				bad = []int64{-1} // 0 stands for something
			}
			if hi > 0 {
				bad = append(bad, hi+1)
			}
			for _, v := range bad {
				t.Run(fmt.Sprintf("--%s %d/%s", f.Name, v, path), func(t *testing.T) {
					t.Parallel()
					msg := usage(t, path, append(slices.Clone(words), fmt.Sprintf("--%s=%d", f.Name, v))...)
					require.True(t, strings.HasPrefix(msg, fmt.Sprintf("canonlog: --%s is %d, must ", f.Name, v)), msg)
				})
			}
			t.Run("help states the bounds of --"+f.Name+"/"+path, func(t *testing.T) {
				t.Parallel()
				r := runWith(t, nil, append(slices.Clone(words), "--help")...)
				require.Equal(t, 0, r.code, r.err)
				require.Contains(t, r.out, bounds{min: lo, max: hi, zero: a[2]}.help())
			})
		})
	}
	for _, tc := range []struct {
		path string
		args []string
		want string
	}{
		{"", []string{"stauts"}, `canonlog: unknown command "stauts" for "canonlog" (did you mean status?)`},
		{"rebuild", []string{"rebuild", "nope"}, `canonlog: unknown projection "nope": known projections are probe_failures`},
		{"verify", []string{"verify", "probe_failures", "nope"}, `canonlog: unknown projection "nope": known projections are probe_failures`},
		{"rebuild", []string{"rebuild", "--batch-size", "x", "--all"}, `canonlog: invalid argument "x" for "--batch-size" flag: strconv.ParseInt: parsing "x": invalid syntax`},
		{"rebuild", []string{"rebuild", "--batch-size", "-1", "--all"}, "canonlog: --batch-size is -1, must be between 1 and 100000, or 0 for the default, 2000"},
		{"query", []string{"query", "--limit", "-1"}, "canonlog: --limit is -1, must be at least 1, or 0 for no limit, streamed in pages"},
		{"tail", []string{"tail", "-n", "-1"}, "canonlog: --lines is -1, must not be negative"},
		{"demo", []string{"demo", "--hosts", "0"}, "canonlog: --hosts is 0, must be between 1 and 10000"},
		{"gen", []string{"gen", "--rollouts", "100001"}, "canonlog: --rollouts is 100001, must be between 1 and 100000"},
		{"migrate up", []string{"migrate", "up", "-o", "xml"}, `canonlog: --output is "xml": use one of table, json`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, usage(t, tc.path, tc.args...))
		})
	}
	// 0 is in bounds where it stands for something: past the usage
	// checks, these fail on the missing database instead.
	for _, args := range [][]string{{"rebuild", "--batch-size", "0", "--all"}, {"query", "--limit", "0"}, {"tail", "-n", "0"}} {
		r := runWith(t, nil, append([]string{"--database-url", url}, args...)...)
		require.Equal(t, exitFailure, r.code, "%q: %s", args, r.err)
		require.Contains(t, r.err, "no database at", "%q", args)
	}
	t.Cleanup(func() { require.NoFileExists(t, db) })
}

// TestExitUsageNamesTheBinary: a service mounting the tree under its own
// name gets that name in messages, hints and help.
func TestExitUsageNamesTheBinary(t *testing.T) {
	t.Parallel()
	cfg := &Config{Name: "fleetd"}
	url := "sqlite:" + filepath.Join(t.TempDir(), "none.db")

	r := runWith(t, cfg, "rebuild", "--no-such-flag")
	require.Equal(t, exitUsage, r.code)
	require.Equal(t, "fleetd: unknown flag: --no-such-flag\nRun 'fleetd rebuild --help' for usage.\n", r.err)

	r = runWith(t, cfg, "--database-url", url, "status")
	require.Equal(t, exitFailure, r.code)
	require.True(t, strings.HasPrefix(r.err, "fleetd: no database at "), r.err)
	require.Contains(t, r.err, "create it with 'fleetd migrate up' (or run 'fleetd demo')")

	// No help text names another binary's commands (bench, on its way to
	// a package of its own, aside).
	for path := range commandPaths(t) {
		if path == "bench" {
			continue
		}
		r := runWith(t, cfg, append(strings.Fields(path), "--help")...)
		require.Equal(t, 0, r.code, r.err)
		require.NotRegexp(t, `canonlog (migrate|append|query|tail|rebuild|verify|status|demo|gen|version|help|completion)\b`, r.out, "fleetd %s --help", path)
	}
	require.Contains(t, runWith(t, cfg, "rebuild", "--help").out, "fleetd rebuild --stale")
}

// cancelOn is a writer that cancels a context once what was written
// holds a string.
type cancelOn struct {
	mu     sync.Mutex
	buf    strings.Builder
	substr string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.substr) {
		w.cancel()
	}
	return len(p), nil
}

func (w *cancelOn) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// cancelAfter reads r and cancels a context once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	if c.n -= k; c.n <= 0 {
		c.cancel()
	}
	return k, err
}

// TestExitInterrupted: a command whose context ends before it is done
// (SIGINT or SIGTERM in Main) exits 130 with one line saying it was
// interrupted, and changes nothing: every command interrupted before it
// starts, and rebuild and append --file interrupted midway. (tail -f:
// TestTail.)
func TestExitInterrupted(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend).migrated()
		history := c.ok("", "gen", "--events", "3000", "--hosts", "20", "--fail-ratio", "0.4")
		c.ok(strings.Join(strings.SplitAfter(history, "\n")[:1500], ""), "append", "--file", "-")
		tamper(t, c)
		before := c.state()
		interrupted := func(t *testing.T, r result, args []string) {
			t.Helper()
			require.Equal(t, exitInterrupted, r.code, "%q: %s", args, r.err)
			require.True(t, strings.HasPrefix(r.err, "canonlog: "), "%q: %q", args, r.err)
			require.Contains(t, r.err, "interrupted", "%q", args)
			require.Equal(t, 1, strings.Count(r.err, "\n"), "%q: %q", args, r.err)
			require.Equal(t, before, c.state(), "%q changed the log or the view", args)
		}

		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		for _, tc := range []struct {
			stdin string
			args  []string
		}{
			{"", []string{"status"}},
			{"", []string{"query"}},
			{"", []string{"tail"}},
			{"", []string{"tail", "-f"}},
			{"", []string{"verify"}},
			{"", []string{"rebuild", "--all"}},
			{"", []string{"append", "--kind", "effect", "--payload", "{}"}},
			{"{}", []string{"append", "--kind", "effect", "--payload", "@-"}},
			{history, []string{"append", "--file", "-"}},
			{"", []string{"migrate", "up"}},
			{"", []string{"migrate", "status"}},
			{"", []string{"demo", "--progress", "none"}},
			{"", []string{"gen"}},
		} {
			args := append([]string{"--database-url", c.url}, tc.args...)
			var out, errOut strings.Builder
			code := Run(cancelled, nil, args, strings.NewReader(tc.stdin), &out, &errOut)
			interrupted(t, result{out.String(), errOut.String(), code}, tc.args)
		}

		t.Run("MidRebuild", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// The first progress line is written once the rebuild has
			// made its copy of the view, before it reads the log.
			stderr := &cancelOn{substr: "rebuild probe_failures: build 0/", cancel: cancel}
			var out strings.Builder
			args := []string{"--database-url", c.url, "rebuild", "probe_failures", "--progress", "lines", "--batch-size", "10"}
			code := Run(ctx, nil, args, strings.NewReader(""), &out, stderr)
			msg := stderr.String()[strings.LastIndex(strings.TrimSuffix(stderr.String(), "\n"), "\n")+1:]
			require.Equal(t, "canonlog: rebuild interrupted: the projection being rebuilt keeps its previous state\n", msg)
			interrupted(t, result{out.String(), msg, code}, args)
			// The tampered row is still there: the old view was kept.
			require.Equal(t, exitDifferent, c.run("", "verify").code)
			// And the interrupted online rebuild cleaned up after itself.
			require.NotContains(t, c.ok("", "status"), "leftover from a stopped rebuild")
		})

		t.Run("MidAppendFile", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Cancelled with more than a chunk read (appended in the
			// transaction) and more than a chunk to go.
			in := &cancelAfter{r: strings.NewReader(history), n: len(history) / 2, cancel: cancel}
			var out, errOut strings.Builder
			args := []string{"--database-url", c.url, "append", "--file", "-"}
			code := Run(ctx, nil, args, in, &out, &errOut)
			require.Equal(t, "canonlog: append from standard input: interrupted, nothing was appended\n", errOut.String())
			interrupted(t, result{out.String(), errOut.String(), code}, args)
		})
	})
}
