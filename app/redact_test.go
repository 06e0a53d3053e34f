package app

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://svc:s3cret@db:5432/fleet?sslmode=disable":     "postgres://svc:xxxxx@db:5432/fleet?sslmode=disable",
		"postgres://svc@db/fleet?password=s3cret&sslmode=disable": "postgres://svc@db/fleet?password=xxxxx&sslmode=disable",
		"sqlite:canonlog.db": "sqlite:canonlog.db",
		"sqlite::memory:":    "sqlite::memory:",
		"postgres://%zz":     "(unparsable URL)",
	} {
		require.Equal(t, want, redactURL(in), in)
	}
}
