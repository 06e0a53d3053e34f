package app_test

import (
	"log/slog"
	"net/url"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

const secret = "s3cret-pw-42"

// TestModuleHidesPasswords: the start-up log names the database with its
// password hidden, in the user part or as a parameter (lib/pq reads both;
// the test server trusts and ignores them), and so does a supplied
// database's ignored URL.
func TestModuleHidesPasswords(t *testing.T) {
	t.Parallel()
	dbtest.Admin(t)
	for name, withSecret := range map[string]func(raw string) string{
		"user part": func(raw string) string {
			u, err := url.Parse(raw)
			require.NoError(t, err)
			u.User = url.UserPassword(u.User.Username(), secret)
			return u.String()
		},
		"parameter": func(raw string) string { return raw + "&password=" + secret },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			raw := withSecret(dbtest.New(t, "postgres").URL)
			var buf testio.SyncBuffer
			logger := slog.New(slog.NewTextHandler(&buf, nil))
			a, _ := setup(t, app.Config{DatabaseURL: raw}, fx.Supply(logger))
			a.RequireStart()
			a.RequireStop()
			require.Contains(t, buf.String(), "url="+strconv.Quote(eventlog.RedactURL(raw)))
			require.Contains(t, buf.String(), "xxxxx")
			require.NotContains(t, buf.String(), secret)

			buf = testio.SyncBuffer{}
			db := dbtest.New(t, "sqlite").Migrated(t)
			a, _ = setup(t, app.Config{DatabaseURL: raw}, fx.Supply(logger), app.WithDB(db))
			a.RequireStart()
			a.RequireStop()
			require.Contains(t, buf.String(), "ignored_url="+strconv.Quote(eventlog.RedactURL(raw)))
			require.NotContains(t, buf.String(), secret)
		})
	}
}

// TestModuleErrorsHidePasswords: a database Module cannot open is named in
// the error without its secrets, whatever form they take.
func TestModuleErrorsHidePasswords(t *testing.T) {
	t.Parallel()
	for name, raw := range map[string]string{
		"user part":       "postgres://svc:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"parameter":       "postgres://svc@127.0.0.1:1/db?password=" + secret + "&sslmode=disable&connect_timeout=2",
		"upper case":      "postgres://svc@127.0.0.1:1/db?PASSWORD=" + secret + "&sslmode=disable&connect_timeout=2",
		"malformed":       "postgres://svc:" + secret + "/x@127.0.0.1/db",
		"keywords":        "host=127.0.0.1 user=svc password=" + secret,
		"keywords quoted": "host=127.0.0.1 password='" + secret + " x'",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := startErr(t, app.Config{DatabaseURL: raw})
			require.ErrorContains(t, err, app.EnvDatabaseURL)
			require.NotContains(t, err.Error(), secret)
		})
	}
}
