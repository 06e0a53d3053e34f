package app_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/projection"
)

func envLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()

	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		for name, tc := range map[string]struct {
			env  map[string]string
			want app.Config
		}{
			"nothing_set_is_the_zero_config": {env: nil, want: app.Config{}},
			"empty_values_are_unset":         {env: map[string]string{app.EnvMigrate: "", app.EnvStalePolicy: " "}, want: app.Config{}},
			"everything": {
				env: map[string]string{
					app.EnvDatabaseURL:      "postgres://svc@db:5432/fleet?sslmode=disable",
					app.EnvMigrate:          "false",
					app.EnvStalePolicy:      "rebuild",
					app.EnvMaxPayloadBytes:  "65536",
					app.EnvSerializeAppends: "1",
				},
				want: app.Config{
					DatabaseURL:      "postgres://svc@db:5432/fleet?sslmode=disable",
					SkipMigrate:      true,
					Stale:            projection.StaleRebuild,
					MaxPayloadBytes:  65536,
					SerializeAppends: true,
				},
			},
			"migrate_true":            {env: map[string]string{app.EnvMigrate: "TRUE"}, want: app.Config{}},
			"stale_ignore_any_case":   {env: map[string]string{app.EnvStalePolicy: "Ignore"}, want: app.Config{Stale: projection.StaleIgnore}},
			"stale_refuse":            {env: map[string]string{app.EnvStalePolicy: "refuse"}, want: app.Config{Stale: projection.StaleRefuse}},
			"database_url_fallback":   {env: map[string]string{app.EnvDatabaseURLFallback: "sqlite:/var/lib/svc/log.db"}, want: app.Config{DatabaseURL: "sqlite:/var/lib/svc/log.db"}},
			"canonlog_url_wins":       {env: map[string]string{app.EnvDatabaseURL: "sqlite:a.db", app.EnvDatabaseURLFallback: "sqlite:b.db"}, want: app.Config{DatabaseURL: "sqlite:a.db"}},
			"surrounding_blanks_trim": {env: map[string]string{app.EnvMaxPayloadBytes: " 100 "}, want: app.Config{MaxPayloadBytes: 100}},
			"pool":                    {env: map[string]string{app.EnvMaxOpenConns: "50", app.EnvMaxIdleConns: "10"}, want: app.Config{MaxOpenConns: 50, MaxIdleConns: 10}},
			"pool_idle_alone":         {env: map[string]string{app.EnvMaxIdleConns: "30"}, want: app.Config{MaxIdleConns: 30}},
			"stale_rebuild_fast":      {env: map[string]string{app.EnvStaleRebuildFast: "true"}, want: app.Config{StaleRebuildFast: true}},
			"stale_rebuild_gentle":    {env: map[string]string{app.EnvStaleRebuildFast: "0"}, want: app.Config{}},
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				got, err := app.LoadConfig(envLookup(tc.env))
				require.NoError(t, err)
				require.Equal(t, tc.want, got)
			})
		}
	})

	t.Run("invalid", func(t *testing.T) {
		t.Parallel()
		for name, tc := range map[string]struct {
			env  map[string]string
			want []string // every message fragment the error must hold
		}{
			"migrate_not_a_bool":       {env: map[string]string{app.EnvMigrate: "maybe"}, want: []string{`CANONLOG_MIGRATE="maybe"`, "true or false"}},
			"stale_unknown":            {env: map[string]string{app.EnvStalePolicy: "repair"}, want: []string{`CANONLOG_STALE_POLICY="repair"`, "refuse, rebuild, ignore or rebuild-online"}},
			"payload_not_a_number":     {env: map[string]string{app.EnvMaxPayloadBytes: "1MiB"}, want: []string{`CANONLOG_MAX_PAYLOAD_BYTES="1MiB"`, "whole number of bytes"}},
			"payload_zero":             {env: map[string]string{app.EnvMaxPayloadBytes: "0"}, want: []string{`CANONLOG_MAX_PAYLOAD_BYTES="0"`}},
			"payload_negative":         {env: map[string]string{app.EnvMaxPayloadBytes: "-5"}, want: []string{`CANONLOG_MAX_PAYLOAD_BYTES="-5"`}},
			"payload_over_1GiB":        {env: map[string]string{app.EnvMaxPayloadBytes: "2147483648"}, want: []string{"1073741824"}},
			"serialize_not_a_bool":     {env: map[string]string{app.EnvSerializeAppends: "yes please"}, want: []string{app.EnvSerializeAppends}},
			"fast_rebuild_not_a_bool":  {env: map[string]string{app.EnvStaleRebuildFast: "gentle"}, want: []string{`CANONLOG_STALE_REBUILD_FAST="gentle"`, "true or false"}},
			"open_conns_not_a_number":  {env: map[string]string{app.EnvMaxOpenConns: "twenty"}, want: []string{`CANONLOG_MAX_OPEN_CONNS="twenty"`, "whole number of connections from 1 to 10000"}},
			"open_conns_zero":          {env: map[string]string{app.EnvMaxOpenConns: "0"}, want: []string{`CANONLOG_MAX_OPEN_CONNS="0"`, "from 1"}},
			"open_conns_negative":      {env: map[string]string{app.EnvMaxOpenConns: "-1"}, want: []string{`CANONLOG_MAX_OPEN_CONNS="-1"`}},
			"open_conns_huge":          {env: map[string]string{app.EnvMaxOpenConns: "100000"}, want: []string{`CANONLOG_MAX_OPEN_CONNS="100000"`, "10000"}},
			"idle_conns_not_a_number":  {env: map[string]string{app.EnvMaxIdleConns: "1.5"}, want: []string{`CANONLOG_MAX_IDLE_CONNS="1.5"`, "whole number of connections"}},
			"idle_above_open":          {env: map[string]string{app.EnvMaxOpenConns: "5", app.EnvMaxIdleConns: "8"}, want: []string{"CANONLOG_MAX_IDLE_CONNS=8 is more than CANONLOG_MAX_OPEN_CONNS=5"}},
			"every_bad_value_reported": {env: map[string]string{app.EnvMigrate: "x", app.EnvStalePolicy: "y", app.EnvMaxOpenConns: "z"}, want: []string{app.EnvMigrate, app.EnvStalePolicy, app.EnvMaxOpenConns}},
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				_, err := app.LoadConfig(envLookup(tc.env))
				require.Error(t, err)
				for _, w := range tc.want {
					require.ErrorContains(t, err, w)
				}
			})
		}
	})
}

// TestConfigFromEnv reads the process environment; it cannot run in
// parallel with tests that set variables.
func TestConfigFromEnv(t *testing.T) {
	t.Setenv(app.EnvDatabaseURL, "sqlite::memory:")
	t.Setenv(app.EnvStalePolicy, "ignore")
	got, err := app.ConfigFromEnv()
	require.NoError(t, err)
	require.Equal(t, "sqlite::memory:", got.DatabaseURL)
	require.Equal(t, projection.StaleIgnore, got.Stale)

	t.Setenv(app.EnvMigrate, "nope")
	_, err = app.ConfigFromEnv()
	require.ErrorContains(t, err, app.EnvMigrate)
}
