package eventlog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
)

func ExampleRedactURL() {
	fmt.Println(eventlog.RedactURL("postgres://svc:s3cret@db:5432/fleet?sslmode=disable"))
	fmt.Println(eventlog.RedactURL("postgres://svc@db/fleet?password=s3cret&sslmode=disable"))
	fmt.Println(eventlog.RedactURL("host=db user=svc password='s3 cret' dbname=fleet"))
	fmt.Println(eventlog.RedactURL("sqlite:canonlog.db"))
	// Output:
	// postgres://svc:xxxxx@db:5432/fleet?sslmode=disable
	// postgres://svc@db/fleet?password=xxxxx&sslmode=disable
	// host=db user=svc password=xxxxx dbname=fleet
	// sqlite:canonlog.db
}

// TestOpenDBKeepsSecretsOut: every way OpenDB can fail — unreachable,
// malformed, unknown scheme — names the database without its password,
// whichever form the password takes.
func TestOpenDBKeepsSecretsOut(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-pw-42"
	for name, raw := range map[string]string{
		"user part":             "postgres://alice:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"parameter":             "postgres://alice@127.0.0.1:1/db?sslmode=disable&password=" + secret + "&connect_timeout=2",
		"parameter upper case":  "postgres://alice@127.0.0.1:1/db?sslmode=disable&Password=" + secret + "&connect_timeout=2",
		"sslpassword":           "postgres://alice@127.0.0.1:1/db?sslmode=disable&sslpassword=" + secret + "&connect_timeout=2",
		"bad port":              "postgres://alice:" + secret + "@host:bad-port/db",
		"password holding /":    "postgres://alice:x/" + secret + "@127.0.0.1/db",
		"password holding / 2":  "postgres://alice:" + secret + "/x@127.0.0.1/db",
		"bad escape":            "postgres://alice:" + secret + "%zz@127.0.0.1/db",
		"keywords":              "host=127.0.0.1 user=alice password=" + secret + " dbname=x",
		"keywords quoted":       "host=127.0.0.1 password='" + secret + " x' dbname=x",
		"unknown scheme":        "mysql://alice:" + secret + "@db/x",
		"sqlite with parameter": "sqlite:?password=" + secret,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db, err := eventlog.OpenDB(context.Background(), raw)
			if db != nil {
				_ = db.Close()
			}
			require.Error(t, err)
			require.NotContains(t, err.Error(), secret)
			require.NotContains(t, err.Error(), "s3cret", "nor a piece of it")
		})
	}
}
