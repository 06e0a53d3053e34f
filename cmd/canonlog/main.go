// Command canonlog operates a canonlog database from the shell. Run
// "canonlog help" for the commands. The command tree lives in package
// canonlogcli, so a service builds its own operator binary the same way,
// with its own projections.
package main

import "github.com/canonlog/canonlog/cmd/canonlog/canonlogcli"

func main() { canonlogcli.Main(nil) }
