package eventlog

import "github.com/canonlog/canonlog/internal/redact"

// RedactURL returns a database URL (any form OpenDB takes, or a lib/pq
// key=value string) with its secrets replaced by xxxxx, for logs and
// messages: the password of the user part, and the value of every
// parameter or key whose name contains "password" in any case, or is
// sslkey. Text it cannot take apart safely — a password holding an
// unencoded '/', '?' or '#', an unterminated quote — is shown as
// "scheme://(hidden)" or "(hidden)". canonlog's own errors, logs and
// command output show URLs this way.
//
//	eventlog.RedactURL("postgres://svc:s3cret@db/app?sslmode=disable")
//	// postgres://svc:xxxxx@db/app?sslmode=disable
func RedactURL(databaseURL string) string { return redact.URL(databaseURL) }
