package app_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
)

// TestService is a service's own test as docs/fx.md shows it: the graph the
// service runs, on a private database, driven through what it populates.
func TestService(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var (
		log      *eventlog.Log
		failures *probefailures.Store
	)
	a := fxtest.New(t,
		fx.Supply(app.Config{DatabaseURL: "sqlite:" + filepath.Join(t.TempDir(), "test.db")}),
		app.Module,
		app.ProbeFailuresModule,
		app.AsProjection(newHostSeen),
		fx.Populate(&log, &failures),
	)
	a.RequireStart()
	defer a.RequireStop()

	_, err := log.Append(ctx, probeResult("web-1", "r-1", "CIS-5.2.1", "web-1/probe/1"))
	require.NoError(t, err)
	hosts, err := failures.FailingHosts(ctx, "r-1", "CIS-5.2.1")
	require.NoError(t, err)
	require.Equal(t, []string{"web-1"}, hosts)
}
