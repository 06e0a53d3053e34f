// Package canonlogcli is the canonlog command tree — migrate, append,
// query, tail, rebuild, verify, status, demo, gen and bench — as a
// package, so that an application mounts the same commands with its own
// projections, and its operators migrate, rebuild, verify and inspect its
// views with them. The canonlog binary is canonlogcli.Main(nil): the
// reference projection, probe_failures, alone.
//
// An application's binary names itself, lists the projections it keeps
// (the same ones its service registers, from one function, so the two
// never disagree), may name its own default database, and adds its own
// commands next to canonlog's:
//
//	func main() {
//		canonlogcli.Main(&canonlogcli.Config{
//			Name:               "fleetd",
//			Projections:        projections(), // what the service registers too
//			DefaultDatabaseURL: "sqlite:fleetd.db",
//			Commands:           []*cobra.Command{newServeCommand()},
//		})
//	}
//
// "fleetd rebuild rollout_progress", "fleetd verify" and "fleetd migrate
// up" then operate the service's own projections, and "fleetd serve" runs
// the service. Run is Main for tests and for a main function that does
// more first (cmd/fleetd rewrites its arguments so that a bare "fleetd"
// serves). The application's commands share the root's --database-url
// flag, its streams and its error handling: see Config.Commands.
//
// Every append goes through the binary's projections in the same
// transaction. An append of a kind consumed by a projection the database
// records but the binary does not register (another binary's) is refused
// unless --allow-drift is given, which marks that projection stale until
// its own binary rebuilds it. See docs/cli.md.
package canonlogcli
