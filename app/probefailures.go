package app

import (
	"github.com/jmoiron/sqlx"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/probefailures"
)

// ProbeFailuresModule adds canonlog's reference projection, probe_failures,
// to Module's registry, and provides the *probefailures.Store that answers
// the compliance gate's queries over it. Include it next to Module:
//
//	fx.New(fx.Provide(app.ConfigFromEnv), app.Module, app.ProbeFailuresModule, …)
var ProbeFailuresModule = fx.Module("canonlog.probefailures",
	AsProjection(probefailures.New),
	fx.Provide(newProbeFailuresStore),
)

// newProbeFailuresStore takes the log only to be built after it: a
// component using the store then starts after Module has migrated the
// probe_failures table.
func newProbeFailuresStore(db *sqlx.DB, _ *eventlog.Log) *probefailures.Store {
	return probefailures.NewStore(db)
}
