// Package soak holds canonlog's soak test: TestSoak runs concurrent writers,
// a follower and periodic projection rebuilds against one log, then checks
// that nothing was lost, duplicated or skipped. It runs briefly in every
// test run; set CANONLOG_SOAK to a Go duration (e.g. 5m) for a long run on
// PostgreSQL:
//
//	CANONLOG_SOAK=5m go test ./internal/soak/ -run TestSoak -count=1 -v -timeout 20m
package soak
