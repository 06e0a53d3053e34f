package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
)

// TestStorm is the load test of fleetd's limits: 500 agents post at once
// to a fleetd whose pool is capped at 20 connections on PostgreSQL (4,
// eventlog.OpenDB's, on a SQLite file). Every answer is 2xx or 503,
// every acknowledged event is stored exactly once, every event answered
// 503 was not stored (its retry lands it: 201, not a duplicate), and
// while fleetd's pool is exhausted a client of its own connects to the
// same database and reads it.
//
// To make "while" certain rather than likely, the test holds every
// connection of fleetd's pool while the posts arrive: the first
// MaxConcurrentRequests (64) posts then wait for a connection, the other
// 436 are answered 503 at once by the concurrency cap, and the other
// client connects; then the test lets the pool go and the 64 land.
// Nothing here asserts a duration: the waits are for conditions.
//
// A 503 may store its event in one case only: fleetd's own deadline
// (Limits.RequestTimeout) passing while the COMMIT is on its way, which
// leaves the outcome unknown; the agent's retry with the same event_id
// then answers 200 with duplicate=true. The deadline here is a minute,
// far beyond what the posts need once the pool is free, so every 503
// comes from the cap, before anything is done, and the test requires
// each retry to answer 201.
func TestStorm(t *testing.T) {
	dbtest.Run(t, func(t *testing.T, backend string) {
		const (
			posts   = 500
			maxOpen = 20
		)
		ctx := context.Background()
		b := dbtest.New(t, backend)
		var admin *sqlx.DB
		if backend == "postgres" {
			admin = dbtest.Admin(t)
		}
		tag := dbtest.NewName() // fleetd's sessions on the server, by application_name
		logs := &errorCount{Handler: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})}
		cfg := Config{
			Addr:     "127.0.0.1:0",
			Canonlog: app.Config{DatabaseURL: b.SessionURL(tag)},
			Logger:   slog.New(logs),
			// Longer than the default 10s, so that on a loaded machine the
			// 64 held posts still land rather than time out (which would
			// also be a 503 that stored nothing, but prove less).
			Limits: Limits{RequestTimeout: time.Minute},
		}
		if backend == "postgres" {
			cfg.Canonlog.MaxOpenConns = maxOpen
		}
		var (
			srv *server
			db  *sqlx.DB
		)
		fxApp := fxtest.New(t, Options(cfg), fx.Populate(&srv, &db))
		fxApp.RequireStart()
		t.Cleanup(fxApp.RequireStop)
		poolSize := db.Stats().MaxOpenConnections
		if backend == "postgres" {
			require.Equal(t, maxOpen, poolSize)
		}
		limit := Limits{}.withDefaults().MaxConcurrentRequests

		// Hold the whole pool.
		held := make([]*sql.Conn, poolSize)
		for i := range held {
			c, err := db.Conn(ctx)
			require.NoError(t, err)
			held[i] = c
		}

		tr := &http.Transport{MaxIdleConnsPerHost: posts}
		t.Cleanup(tr.CloseIdleConnections)
		hc := &http.Client{Transport: tr}
		type result struct {
			status     int
			retryAfter string
			body       posted
		}
		var (
			results  [posts]result
			answered atomic.Int32
			wg       sync.WaitGroup
			start    = make(chan struct{})
		)
		post := func(i int) result {
			resp, err := hc.Post("http://"+srv.Addr()+"/v1/agent-events", "application/json",
				strings.NewReader(probeBody(fmt.Sprintf("web-%d", i), "r-storm", stormID(i), "CIS-1")))
			if err != nil {
				return result{status: -1, body: posted{Error: err.Error()}}
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			r := result{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
			if err == nil {
				err = json.Unmarshal(raw, &r.body)
			}
			if err != nil {
				r.body.Error = fmt.Sprintf("%v: %s", err, raw)
			}
			return r
		}
		for i := range posts {
			wg.Go(func() {
				<-start
				results[i] = post(i)
				answered.Add(1)
			})
		}
		close(start)

		// The cap answers all but the posts it let in, which wait for the
		// pool.
		require.Eventually(t, func() bool { return answered.Load() == int32(posts-limit) }, time.Minute, 5*time.Millisecond,
			"answered %d", answered.Load())
		require.Eventually(t, func() bool { return db.Stats().WaitCount >= int64(limit) }, time.Minute, 5*time.Millisecond,
			"the posts let in wait for the pool: %+v", db.Stats())

		// Meanwhile the database has room for other clients: fleetd has
		// taken no more than its pool's connections.
		if backend == "postgres" {
			// Eventually: a session the pool closed before (none should)
			// takes a moment to leave pg_stat_activity.
			require.Eventually(t, func() bool { return sessions(t, admin, tag) == maxOpen }, time.Minute, 5*time.Millisecond,
				"fleetd's sessions on the server: %d", sessions(t, admin, tag))
		}
		other, err := eventlog.OpenDB(ctx, b.URL) // sql.Open and a ping
		require.NoError(t, err)
		var n int
		require.NoError(t, other.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_log`).Scan(&n))
		require.Zero(t, n, "nothing landed while the pool was held")
		require.NoError(t, other.Close())

		for _, c := range held {
			require.NoError(t, c.Close())
		}
		wg.Wait()
		if backend == "postgres" {
			require.LessOrEqual(t, sessions(t, admin, tag), maxOpen)
		}

		stored := storedSeqs(t, db)
		var created, unavailable []int
		for i, r := range results {
			switch r.status {
			case http.StatusCreated:
				created = append(created, i)
				require.False(t, r.body.Duplicate)
				require.Equal(t, r.body.Seq, stored[stormID(i)], "post %d is stored under the seq it was answered with", i)
			case http.StatusServiceUnavailable:
				unavailable = append(unavailable, i)
				require.Equal(t, "1", r.retryAfter)
				require.NotEmpty(t, r.body.Error)
				require.NotContains(t, stored, stormID(i), "post %d was answered 503 and stored nothing", i)
			default:
				t.Fatalf("post %d: %d %s", i, r.status, r.body.Error)
			}
		}
		t.Logf("%s: %d posts answered 201, %d answered 503; pool %+v", backend, len(created), len(unavailable), db.Stats())
		require.Len(t, created, limit, "the posts let in landed once the pool was free")
		require.Len(t, stored, len(created), "nothing else landed")

		// The agents answered 503 retry with the same event_id: each lands
		// now, once — not a duplicate of anything.
		retries := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range retries {
					results[i] = post(i)
				}
			})
		}
		for _, i := range unavailable {
			retries <- i
		}
		close(retries)
		wg.Wait()
		stored = storedSeqs(t, db)
		for _, i := range unavailable {
			r := results[i]
			require.Equal(t, http.StatusCreated, r.status, "retry of post %d: %s", i, r.body.Error)
			require.Equal(t, r.body.Seq, stored[stormID(i)])
		}
		require.Len(t, stored, posts, "every post stored exactly once")
		require.Zero(t, logs.errors.Load(), "nothing logged at ERROR")
	})
}

// stormID is post i's event id, in its host's namespace (web-i), where
// fleetd stores it as given.
func stormID(i int) string { return fmt.Sprintf("web-%d/storm/%d", i, i) }

// storedSeqs maps each stored storm event's event_id to its seq, and
// fails if an event_id is stored twice.
func storedSeqs(t *testing.T, db *sqlx.DB) map[string]int64 {
	t.Helper()
	var rows []struct {
		EventID string `db:"event_id"`
		Seq     int64  `db:"seq"`
	}
	require.NoError(t, db.Select(&rows, `SELECT event_id, seq FROM event_log WHERE event_id LIKE 'web-%/storm/%'`))
	out := map[string]int64{}
	for _, r := range rows {
		_, dup := out[r.EventID]
		require.False(t, dup, "%s stored twice", r.EventID)
		out[r.EventID] = r.Seq
	}
	return out
}

// sessions counts the server's sessions whose application_name is tag.
func sessions(t *testing.T, admin *sqlx.DB, tag string) int {
	t.Helper()
	var n int
	require.NoError(t, admin.Get(&n, `SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1`, tag))
	return n
}

// errorCount is a slog.Handler counting the records at ERROR it passes
// on.
type errorCount struct {
	slog.Handler
	errors atomic.Int32
}

func (h *errorCount) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.errors.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

// fleetd's loggers add no attributes or groups of their own.
func (h *errorCount) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorCount) WithGroup(string) slog.Handler      { return h }
