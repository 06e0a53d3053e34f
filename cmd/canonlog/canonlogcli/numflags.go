package canonlogcli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// bounds is the range of a numeric flag. One declaration writes the range
// into the flag's help and refuses a value outside it (exit 2) before the
// command runs, so the help and the check cannot drift apart.
type bounds struct {
	min int64
	max int64 // 0: no upper bound
	// zero, when set, is what 0 stands for ("no limit", "the default,
	// 2000"): 0 is accepted besides min..max.
	zero string
}

// boundsAnnotation carries a flag's bounds, as min, max and zero.
const boundsAnnotation = "canonlog_bounds"

// help describes b for a flag's help: "(1 to 10000)", "(0 or more)",
// "(1 or more; 0 for no limit)".
func (b bounds) help() string {
	s := fmt.Sprintf("%d or more", b.min)
	if b.max > 0 {
		s = fmt.Sprintf("%d to %d", b.min, b.max)
	}
	if b.zero != "" {
		s += "; 0 for " + b.zero
	}
	return "(" + s + ")"
}

// check refuses v outside b as a usage error naming the flag.
func (b bounds) check(flag string, v int64) error {
	if v >= b.min && (b.max == 0 || v <= b.max) || v == 0 && b.zero != "" {
		return nil
	}
	var want string
	switch {
	case b.max > 0:
		want = fmt.Sprintf("must be between %d and %d", b.min, b.max)
	case b.min == 0:
		want = "must not be negative"
	default:
		want = fmt.Sprintf("must be at least %d", b.min)
	}
	if b.zero != "" {
		want += ", or 0 for " + b.zero
	}
	return usagef("--%s is %d, %s", flag, v, want)
}

// numFlag adds an int or int64 flag whose help ends with its bounds, and
// marks it for checkNumFlags.
func numFlag[N int | int64](fs *pflag.FlagSet, dst *N, name, short string, def N, b bounds, usage string) {
	usage += " " + b.help()
	switch p := any(dst).(type) {
	case *int:
		fs.IntVarP(p, name, short, int(def), usage)
	case *int64:
		fs.Int64VarP(p, name, short, int64(def), usage)
	}
	// The flag was just added: SetAnnotation cannot fail.
	_ = fs.SetAnnotation(name, boundsAnnotation, []string{strconv.FormatInt(b.min, 10), strconv.FormatInt(b.max, 10), b.zero})
}

// checkNumFlags checks every flag of cmd that numFlag added against its
// bounds. It runs before every command (the root's PersistentPreRunE).
func checkNumFlags(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		a, ok := f.Annotations[boundsAnnotation]
		if err != nil || !ok || len(a) != 3 {
			return
		}
		// Both were written by numFlag, and the value parsed as an
		// integer when the flag was set.
		v, _ := strconv.ParseInt(f.Value.String(), 10, 64)
		lo, _ := strconv.ParseInt(a[0], 10, 64)
		hi, _ := strconv.ParseInt(a[1], 10, 64)
		err = bounds{min: lo, max: hi, zero: a[2]}.check(f.Name, v)
	})
	return err
}
