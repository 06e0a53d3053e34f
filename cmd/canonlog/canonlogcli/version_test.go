package canonlogcli

import (
	"bytes"
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// runWith runs the command tree configured by cfg, with no database.
func runWith(t *testing.T, cfg *Config, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), cfg, args, strings.NewReader(""), &out, &errOut)
	return result{out.String(), errOut.String(), code}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	t.Run("BothForms", func(t *testing.T) {
		t.Parallel()
		cmd := runWith(t, nil, "version")
		flag := runWith(t, nil, "--version")
		require.Equal(t, 0, cmd.code, cmd.err)
		require.Equal(t, 0, flag.code, flag.err)
		require.Empty(t, cmd.err)
		require.Equal(t, cmd.out, flag.out, "version and --version print the same line")
		require.Regexp(t, `^canonlog version \S+`, cmd.out)
		require.Contains(t, cmd.out, runtime.Version())
		require.Equal(t, 1, strings.Count(cmd.out, "\n"))
	})
	t.Run("ConfigVersion", func(t *testing.T) {
		t.Parallel()
		cfg := &Config{Name: "fleetd", Version: "v2.1.0"}
		for _, args := range [][]string{{"version"}, {"--version"}} {
			r := runWith(t, cfg, args...)
			require.Equal(t, 0, r.code, r.err)
			require.True(t, strings.HasPrefix(r.out, "fleetd version v2.1.0"), r.out)
			require.Contains(t, r.out, runtime.Version())
		}
	})
	t.Run("ExtraArgument", func(t *testing.T) {
		t.Parallel()
		r := runWith(t, nil, "version", "now")
		require.Equal(t, exitUsage, r.code)
		require.Equal(t, "canonlog: unknown command \"now\" for \"canonlog version\"\nRun 'canonlog version --help' for usage.\n", r.err)
	})
}

func TestVersionLine(t *testing.T) {
	t.Parallel()
	main := debug.Module{Path: canonlogModule, Version: "v0.4.0"}
	vcs := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "1a2b3c4d"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		name, override string
		bi             *debug.BuildInfo
		want           string
	}{
		{"release", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: main}, "canonlog version v0.4.0, go1.26.8"},
		{"working tree", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: canonlogModule, Version: "(devel)"}, Settings: vcs},
			"canonlog version (devel), revision 1a2b3c4d, modified, go1.26.8"},
		{"clean checkout", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: main,
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "1a2b3c4d"}, {Key: "vcs.modified", Value: "false"}}},
			"canonlog version v0.4.0, revision 1a2b3c4d, go1.26.8"},
		{"override", "v9.9.9", &debug.BuildInfo{GoVersion: "go1.26.8", Main: main, Settings: vcs},
			"canonlog version v9.9.9, revision 1a2b3c4d, modified, go1.26.8"},
		{"no build info", "", nil, "canonlog version (devel)"},
		{"empty main version", "", &debug.BuildInfo{GoVersion: "go1.26.8"}, "canonlog version (devel), go1.26.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, versionLine("canonlog", tc.override, tc.bi))
		})
	}
	t.Run("service binary names the canonlog it embeds", func(t *testing.T) {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "example.com/fleet", Version: "v2.1.0"},
			Deps: []*debug.Module{{Path: "github.com/lib/pq", Version: "v1.12.3"}, {Path: canonlogModule, Version: "v0.4.0"}}}
		require.Equal(t, "fleetd version v2.1.0 (canonlog v0.4.0), go1.26.8", versionLine("fleetd", "", bi))
		bi.Deps[1].Replace = &debug.Module{Path: canonlogModule, Version: "v0.4.1"}
		require.Equal(t, "fleetd version v2.1.0 (canonlog v0.4.1), go1.26.8", versionLine("fleetd", "", bi))
	})
}
