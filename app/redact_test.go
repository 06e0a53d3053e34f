package app

import (
	"errors"
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

func TestRedactError(t *testing.T) {
	t.Parallel()
	raw := "postgres://u@db/x?password=s%26cret&sslmode=disable"
	cause := errors.New("eventlog: connect to " + raw + ": connection refused")
	err := redactError(cause, raw)
	require.ErrorIs(t, err, cause)
	require.Equal(t, "eventlog: connect to postgres://u@db/x?password=xxxxx&sslmode=disable: connection refused", err.Error())
	require.Equal(t, cause, redactError(cause, "sqlite:x.db"))
}
