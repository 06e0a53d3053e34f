package projection_test

import (
	"flag"
	"os"
	"testing"
)

// defaultRapidChecks is how many histories the property tests try in the
// default run, which must stay short on a 2-core machine. rapid's own
// default (100) is the long run: RAPID_CHECKS=100 or -rapid.checks=100.
const defaultRapidChecks = "20"

func TestMain(m *testing.M) {
	flag.Parse()
	if _, ok := os.LookupEnv("RAPID_CHECKS"); !ok && !flagSet("rapid.checks") {
		if err := flag.Set("rapid.checks", defaultRapidChecks); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// flagSet reports whether the command line set the flag name.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
