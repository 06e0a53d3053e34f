package canonlogcli

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// canonlogModule is this module's path: a binary built in another module
// (a service's operator binary) names the canonlog version it embeds.
const canonlogModule = "github.com/canonlog/canonlog"

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this binary",
		Long: g.named(`version prints the binary's version, as '{name} --version' does: the module
version it was built from ("(devel)" for a build from a working tree),
the VCS revision when the build recorded it (with ", modified" for
uncommitted changes), and the Go version.`),
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(g.stdout, g.version())
			return err
		},
	}
}

// version is the line version and --version print.
func (g *globals) version() string {
	bi, _ := debug.ReadBuildInfo() // nil when the binary carries none
	return versionLine(g.cfg.Name, g.cfg.Version, bi)
}

// versionLine renders the version of the binary called name:
//
//	canonlog version v0.4.0, revision 1a2b…, modified, go1.26.8
//	fleetd version v2.1.0 (canonlog v0.4.0), go1.26.8
//
// override, when set, replaces the main module's version. bi is nil when
// the binary carries no build information.
func versionLine(name, override string, bi *debug.BuildInfo) string {
	v := override
	if v == "" && bi != nil {
		v = bi.Main.Version
	}
	if v == "" {
		v = "(devel)"
	}
	parts := []string{name + " version " + v}
	if bi == nil {
		return parts[0]
	}
	if bi.Main.Path != canonlogModule {
		for _, d := range bi.Deps {
			if d.Path == canonlogModule {
				if d.Replace != nil && d.Replace.Version != "" {
					d = d.Replace
				}
				parts[0] += " (canonlog " + d.Version + ")"
			}
		}
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" {
		parts = append(parts, "revision "+rev)
		if modified == "true" {
			parts = append(parts, "modified")
		}
	}
	if bi.GoVersion != "" {
		parts = append(parts, bi.GoVersion)
	}
	return strings.Join(parts, ", ")
}
