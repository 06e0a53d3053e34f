package probefailures_test

import (
	"go/build"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// probe_failures is the reference for projections written outside this
// module, which cannot import canonlog's internal packages: it must get by
// with the public API too. Its tests may use internal helpers.
func TestImportsNoInternalPackage(t *testing.T) {
	t.Parallel()
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	require.NotEmpty(t, pkg.Imports)
	for _, path := range pkg.Imports {
		require.False(t, isInternal(path), "package %s imports %s: a projection outside this module could not; publish what it needs", pkg.Name, path)
	}
	// The check itself sees an internal import.
	require.True(t, isInternal("github.com/canonlog/canonlog/internal/dbtime"))
}

func isInternal(path string) bool {
	return strings.HasSuffix(path, "/internal") || strings.Contains(path, "/internal/") || strings.HasPrefix(path, "internal/")
}
