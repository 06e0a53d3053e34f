package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/internal/dbtest"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestDemo(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		url := dbtest.New(t, backend).URL
		out, errOut, code := runCLI(t, "--database-url", url, "demo", "--hosts", "4")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "appended 10 new events (0 already present); last seq 10")
		require.Equal(t, 4, strings.Count(out, "probe "))

		// Idempotent: a second run appends nothing.
		out, errOut, code = runCLI(t, "--database-url", url, "demo", "--hosts", "4")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "appended 0 new events (10 already present); last seq 10")
	})
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	url := "sqlite:" + filepath.Join(t.TempDir(), "x.db")
	_, errOut, code := runCLI(t, "--database-url", url, "demo", "--hosts", "0")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--hosts is 0")
	_, errOut, code = runCLI(t, "demo", "--no-such-flag")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "unknown flag")
	_, errOut, code = runCLI(t, "no-such-command")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "unknown command")
	_, errOut, code = runCLI(t, "demo", "extra-arg")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "extra-arg")
	_, errOut, code = runCLI(t, "--database-url", "mysql://nope", "demo")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "unknown scheme")
}
