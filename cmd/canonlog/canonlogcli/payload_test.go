package canonlogcli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// TestPayloadReadBounded: --payload @SOURCE reads at most the payload limit
// plus one byte, so an endless or oversized source is a usage error at
// once, and nothing is appended.
func TestPayloadReadBounded(t *testing.T) {
	t.Parallel()
	big := filepath.Join(t.TempDir(), "big.json")
	require.NoError(t, os.WriteFile(big, bytes.Repeat([]byte(" "), 5<<20), 0o600))
	overStdin := `"` + strings.Repeat("x", eventlog.DefaultMaxPayloadBytes) + `"`

	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend).migrated()
		c.ok(hostileSeed, "append", "--file", "-")
		before := c.state()
		for _, tc := range []struct {
			name, stdin, payload, want string
		}{
			{"dev zero", "", "@/dev/zero", "--payload: payload too large: larger than the limit of 1048576 bytes (@/dev/zero)"},
			{"stdin over the limit", overStdin, "@-", "--payload: payload too large: larger than the limit of 1048576 bytes (@-)"},
			{"file of 5 MiB", "", "@" + big, "--payload: payload too large: 5242880 bytes, the limit is 1048576 (@" + big + ")"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := c.run(tc.stdin, "append", "--kind", "effect", "--payload", tc.payload)
				require.Equal(t, exitUsage, r.code, r.err)
				require.Equal(t, "canonlog: "+tc.want+"\nRun 'canonlog append --help' for usage.\n", r.err)
				require.Equal(t, before, c.state(), "nothing appended")
			})
		}
		// At the limit exactly, from standard input: appended.
		atLimit := `"` + strings.Repeat("x", eventlog.DefaultMaxPayloadBytes-2) + `"`
		require.Equal(t, "seq 3\n", c.ok(atLimit, "append", "--kind", "effect", "--payload", "@-"))
	})
}

// TestPayloadReadInterrupted: SIGTERM ends the real binary while it waits
// for a payload that never comes — a FIFO no writer opens (open(2)
// blocks), a FIFO whose writer never writes (read(2) blocks), standard
// input that stays open — with a one-line error, exit 130, and nothing
// appended.
func TestPayloadReadInterrupted(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		c := newCLI(t, backend)
		u := newUser(t, c.url)
		u.ok("", "migrate", "up")
		u.ok(hostileSeed, "append", "--file", "-")
		before := c.state()

		for _, tc := range []struct {
			name string
			// start prepares the source and returns the --payload value,
			// the standard input, and what to do once the process runs
			// (nil: nothing) before it is interrupted.
			start func(t *testing.T) (payload string, stdin *os.File, running func(*exec.Cmd))
		}{
			{"fifo never opened by a writer", func(t *testing.T) (string, *os.File, func(*exec.Cmd)) {
				return "@" + fifo(t), nil, nil
			}},
			{"fifo never written", func(t *testing.T) (string, *os.File, func(*exec.Cmd)) {
				path := fifo(t)
				return "@" + path, nil, func(*exec.Cmd) {
					// Opening the write end without blocking succeeds once
					// the process has the read end open: from then on its
					// read waits for bytes that never come.
					for {
						fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
						if err == nil {
							t.Cleanup(func() { _ = syscall.Close(fd) })
							return
						}
						require.ErrorIs(t, err, syscall.ENXIO)
						time.Sleep(10 * time.Millisecond)
					}
				}
			}},
			{"stdin never written", func(t *testing.T) (string, *os.File, func(*exec.Cmd)) {
				r, w, err := os.Pipe()
				require.NoError(t, err)
				t.Cleanup(func() { _ = r.Close(); _ = w.Close() })
				return "@-", r, nil
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				r := interrupted(t, func() (*exec.Cmd, func(*exec.Cmd)) {
					payload, stdin, running := tc.start(t)
					cmd := u.cmd("append", "--kind", "effect", "--payload", payload)
					if stdin != nil {
						cmd.Stdin = stdin
					}
					return cmd, running
				})
				require.Equal(t, exitInterrupted, r.code, r.err)
				require.True(t, strings.HasPrefix(r.err, "canonlog: append: interrupted while reading --payload @"), r.err)
				require.True(t, strings.HasSuffix(r.err, "; nothing was appended\n"), r.err)
				require.Equal(t, 1, strings.Count(r.err, "\n"), r.err)
				require.Empty(t, r.out)
				require.Equal(t, before, c.state(), "nothing appended")
			})
		}
	})
}

// fifo makes a named pipe in a temporary directory.
func fifo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "payload.fifo")
	require.NoError(t, syscall.Mkfifo(path, 0o600))
	return path
}

// interrupted starts the command that start builds, sends it SIGTERM and
// returns how it ended. A SIGTERM that lands before main has installed
// its handler kills the process outright; that is retried with a longer
// wait, so the result is always the command's own answer to the signal.
// A process still running a minute after the signal fails the test.
func interrupted(t *testing.T, start func() (*exec.Cmd, func(*exec.Cmd))) result {
	t.Helper()
	for wait := 100 * time.Millisecond; ; wait *= 2 {
		cmd, running := start()
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if running != nil {
			running(cmd)
		}
		time.Sleep(wait)
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		var err error
		select {
		case err = <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("still running a minute after SIGTERM; stderr: %q", errOut.String())
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				require.Less(t, wait, 10*time.Second, "killed by SIGTERM before main ran, every time")
				continue
			}
			return result{out.String(), errOut.String(), ee.ExitCode()}
		}
		require.NoError(t, err)
		return result{out.String(), errOut.String(), 0}
	}
}
