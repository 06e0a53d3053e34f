package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRunUsage: the command's usage errors exit 2 with one line saying
// what to change, before connecting to anything.
func TestRunUsage(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"help":            {[]string{"-h"}, exitOK, "-batch-size int"},
		"unknown flag":    {[]string{"-events", "5"}, exitUsage, "flag provided but not defined: -events"},
		"extra argument":  {[]string{"run"}, exitUsage, `peersbench: unexpected argument "run": every setting is a flag (see -h)`},
		"sqlite":          {[]string{"-database-url", "sqlite:x.db"}, exitUsage, "the peers are compared on PostgreSQL only"},
		"negative rounds": {[]string{"-rounds", "-2"}, exitUsage, "peersbench: peers: Config.Rounds is -2: use a positive number, or 0 for the default of 3"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			require.Equal(t, tc.code, run(t.Context(), tc.args, &stdout, &stderr))
			require.Contains(t, stderr.String(), tc.want)
			require.Empty(t, stdout.String())
		})
	}
}
