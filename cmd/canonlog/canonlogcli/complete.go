package canonlogcli

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/canonlog/canonlog/eventlog"
)

// Shell completion: cobra's completion command writes the script for
// bash, zsh, fish or PowerShell; the script asks the binary itself (the
// hidden __complete command) for the words to offer. The functions here
// give those words for arguments and flag values that are not files.

// completeFlag registers complete for the flag name of cmd.
func completeFlag(cmd *cobra.Command, name string, complete cobra.CompletionFunc) {
	if err := cmd.RegisterFlagCompletionFunc(name, complete); err != nil {
		// The flag is not defined, or has a function already: a mistake
		// in this package, caught by any test that builds the tree.
		panic(fmt.Sprintf("complete --%s of %s: %v", name, cmd.Name(), err))
	}
}

// fixedCompletions offers the words that start with what is typed, and no
// file names.
func fixedCompletions(words ...string) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var out []cobra.Completion
		for _, w := range words {
			if strings.HasPrefix(w, toComplete) {
				out = append(out, w)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeProjections offers the names of the binary's projections not
// already given as arguments (rebuild and verify).
func completeProjections(cfg *Config) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var out []cobra.Completion
		for _, n := range projectionNames(cfg) {
			if strings.HasPrefix(n, toComplete) && !slices.Contains(args, n) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// predefinedKinds returns eventlog's predefined kinds as strings.
func predefinedKinds() []string {
	var out []string
	for _, k := range eventlog.PredefinedKinds() {
		out = append(out, string(k))
	}
	return out
}

// completeKindList offers the predefined kinds for a flag that takes a
// comma-separated list (query and tail --kind): after "agent_event,ef"
// it offers "agent_event,effect", leaving out the kinds already listed.
func completeKindList(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	given, last := "", toComplete
	if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
		given, last = toComplete[:i+1], toComplete[i+1:]
	}
	listed := strings.Split(given, ",")
	var out []cobra.Completion
	for _, k := range predefinedKinds() {
		if strings.HasPrefix(k, last) && !slices.Contains(listed, k) {
			out = append(out, given+k)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
