package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/canonlog/canonlog/app"
	"github.com/canonlog/canonlog/consumer"
	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/testio"
)

// seqRecorder is an external handler that records the seqs it gets.
type seqRecorder struct {
	mu   sync.Mutex
	seqs []int64
}

func (r *seqRecorder) handle(_ context.Context, ev eventlog.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, ev.Seq)
	return nil
}

func (r *seqRecorder) got() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs)
}

// eventually polls cond until it holds; it fails the test after a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func effectEntry(host string) eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindEffect, HostID: host, Payload: json.RawMessage(`{}`)}
}

func planEntry() eventlog.Entry {
	return eventlog.Entry{Kind: eventlog.KindPlanAction, Payload: json.RawMessage(`{}`)}
}

// statusOf reads a consumer's status with a pool of its own (the app's is
// closed once it stopped).
func statusOf(t *testing.T, b dbtest.Backend, name string) consumer.Status {
	t.Helper()
	log, err := eventlog.New(b.Open(t), nil)
	require.NoError(t, err)
	defer log.Close()
	sts, err := consumer.ReadStatus(context.Background(), log)
	require.NoError(t, err)
	for _, s := range sts {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no consumer %q in %+v", name, sts)
	return consumer.Status{}
}

// Consumers registered with AsConsumer — a constructor taking the app's
// database, a config value, a constructor returning a value — run from
// start to stop on the app's log, after the migrations, on both backends.
func TestAsConsumer(t *testing.T) {
	t.Parallel()
	dbtest.Run(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		b := dbtest.New(t, backend)
		_, err := b.Open(t).Exec(`CREATE TABLE effects_seen (seq BIGINT PRIMARY KEY, host_id TEXT NOT NULL)`)
		require.NoError(t, err)

		// Transactional, from a constructor that takes the app's database
		// (a consumer's constructor runs after Module's: no cycle).
		newEffectsView := func(db *sqlx.DB) (*consumer.Config, error) {
			insert := db.Rebind(`INSERT INTO effects_seen (seq, host_id) VALUES (?, ?)`)
			return &consumer.Config{Name: "effects_view", Kinds: []eventlog.Kind{eventlog.KindEffect}, PollInterval: 10 * time.Millisecond,
				HandleTx: func(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error {
					for _, ev := range events {
						if _, err := tx.ExecContext(ctx, insert, ev.Seq, ev.HostID); err != nil {
							return err
						}
					}
					return nil
				}}, nil
		}
		var all, plans seqRecorder
		var buf testio.SyncBuffer
		var log *eventlog.Log
		a := fxtest.New(t,
			fx.Supply(app.Config{DatabaseURL: b.URL}),
			fx.Supply(slog.New(slog.NewTextHandler(&buf, nil))),
			app.Module,
			app.AsConsumer(newEffectsView),
			app.AsConsumer(consumer.Config{Name: "everything", Handle: all.handle, PollInterval: 10 * time.Millisecond}),
			app.AsConsumer(func() consumer.Config {
				return consumer.Config{Name: "plans", Kinds: []eventlog.Kind{eventlog.KindPlanAction}, Handle: plans.handle, PollInterval: 10 * time.Millisecond}
			}),
			fx.Populate(&log),
		)
		a.RequireStart()
		var entries []eventlog.Entry
		for i := range 30 {
			entries = append(entries, effectEntry(fmt.Sprint("h", i%3)), planEntry())
		}
		res, err := log.AppendBatch(ctx, entries)
		require.NoError(t, err)
		var effects, planSeqs, every []int64
		for _, r := range res {
			every = append(every, r.Event.Seq)
			if r.Event.Kind == eventlog.KindEffect {
				effects = append(effects, r.Event.Seq)
			} else {
				planSeqs = append(planSeqs, r.Event.Seq)
			}
		}
		db := b.Open(t)
		seen := func() []int64 {
			var out []int64
			require.NoError(t, db.Select(&out, `SELECT seq FROM effects_seen ORDER BY seq`))
			return out
		}
		eventually(t, "the consumers to handle the events", func() bool {
			return len(seen()) == len(effects) && len(all.got()) == len(every) && len(plans.got()) == len(planSeqs)
		})
		a.RequireStop()

		require.Equal(t, effects, seen())
		require.Equal(t, every, all.got())
		require.Equal(t, planSeqs, plans.got())
		for name, last := range map[string]int64{"effects_view": effects[len(effects)-1], "everything": every[len(every)-1], "plans": planSeqs[len(planSeqs)-1]} {
			st := statusOf(t, b, name)
			require.Equal(t, last, st.HandledSeq, name)
			require.EqualValues(t, 1, st.Generation, name)
		}
		logs := buf.String()
		for _, name := range []string{"effects_view", "everything", "plans"} {
			require.Contains(t, logs, "canonlog: consumer started\" consumer="+name)
			require.Contains(t, logs, "canonlog: consumer stopped\" consumer="+name)
		}
		migrated := strings.LastIndex(logs, "canonlog: migration applied")
		require.Positive(t, migrated)
		require.Less(t, migrated, strings.Index(logs, "canonlog: consumer started"), "the consumers start after the migrations")
		require.NotContains(t, logs, "level=ERROR")
	})
}

// An invalid consumer configuration fails start, with everything Module
// opened released, before any consumer runs; a registration that is not
// a configuration fails fx.New.
func TestAsConsumerRefuses(t *testing.T) {
	t.Parallel()
	never := func(context.Context, eventlog.Event) error { panic("an invalid consumer ran") }
	for name, tc := range map[string]struct {
		opts []fx.Option
		want string
	}{
		"bad name":   {[]fx.Option{app.AsConsumer(consumer.Config{Name: "Gate-Alerts", Handle: never})}, "Name must be"},
		"no handler": {[]fx.Option{app.AsConsumer(&consumer.Config{Name: "lazy"})}, "give exactly one of Handle"},
		"duplicate name": {[]fx.Option{
			app.AsConsumer(consumer.Config{Name: "twice", Handle: never}),
			app.AsConsumer(func() *consumer.Config { return &consumer.Config{Name: "twice", Handle: never} }),
		}, `consumer name registered more than once with app.AsConsumer, or also an asynchronous projection's: "twice" (2 times)`},
		"nil from a constructor": {[]fx.Option{app.AsConsumer(func() *consumer.Config { return nil })}, "returned a nil *consumer.Config"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "app.db")
			var calls seqRecorder
			valid := consumer.Config{Name: "valid", Handle: calls.handle}
			err := startErr(t, app.Config{DatabaseURL: "sqlite:" + path}, append(tc.opts, app.AsConsumer(valid))...)
			require.ErrorIs(t, err, consumer.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "app: start: ")

			db, err := eventlog.OpenDB(context.Background(), "sqlite:"+path)
			require.NoError(t, err)
			defer db.Close()
			var n int
			require.NoError(t, db.Get(&n, `SELECT COUNT(*) FROM canonlog_consumers`))
			require.Zero(t, n, "no consumer took its position")
			require.Empty(t, calls.got(), "no consumer ran")
		})
	}
	for name, ctor := range map[string]any{
		"nil":            nil,
		"nil pointer":    (*consumer.Config)(nil),
		"not a config":   42,
		"wrong result":   func() int { return 1 },
		"second not err": func() (*consumer.Config, int) { return nil, 0 },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := fx.New(fx.NopLogger, fx.Supply(app.Config{DatabaseURL: "sqlite::memory:"}), app.Module, app.AsConsumer(ctor))
			require.ErrorContains(t, a.Err(), "app.AsConsumer(")
		})
	}
}

// A consumer that stops on an error is logged at ERROR and the app runs
// on — the other consumers too — unless Config.ShutdownOnConsumerError
// shuts it down.
func TestAsConsumerRunError(t *testing.T) {
	t.Parallel()
	failing := consumer.Config{Name: "failing", Attempts: 1, PollInterval: 10 * time.Millisecond,
		Handle: func(context.Context, eventlog.Event) error { return errors.New("downstream says no") }}
	for _, shutdown := range []bool{false, true} {
		t.Run(fmt.Sprint("shutdown=", shutdown), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			var buf testio.SyncBuffer
			var ok seqRecorder
			var log *eventlog.Log
			a := fxtest.New(t,
				fx.Supply(app.Config{DatabaseURL: "sqlite:" + filepath.Join(t.TempDir(), "app.db"), ShutdownOnConsumerError: shutdown}),
				fx.Supply(slog.New(slog.NewTextHandler(&buf, nil))),
				app.Module,
				app.AsConsumer(failing),
				app.AsConsumer(consumer.Config{Name: "fine", Handle: ok.handle, PollInterval: 10 * time.Millisecond}),
				fx.Populate(&log),
			)
			a.RequireStart()
			defer a.RequireStop()
			first, err := log.Append(ctx, effectEntry("h"))
			require.NoError(t, err)
			eventually(t, "the failure to be logged", func() bool { return strings.Contains(buf.String(), "level=ERROR") })
			require.Contains(t, buf.String(), `msg="canonlog: consumer stopped: its handler keeps failing on an event`)
			require.Contains(t, buf.String(), fmt.Sprintf("consumer=failing seq=%d attempts=1", first.Event.Seq))
			if shutdown {
				select {
				case sig := <-a.Wait():
					require.Equal(t, 1, sig.ExitCode)
				case <-time.After(time.Minute):
					t.Fatal("the app was not shut down")
				}
				return
			}
			second, err := log.Append(ctx, effectEntry("h"))
			require.NoError(t, err)
			eventually(t, "the other consumer to go on", func() bool { return slices.Contains(ok.got(), second.Event.Seq) })
			select {
			case sig := <-a.Wait():
				t.Fatalf("the app was shut down: %v", sig)
			default:
			}
		})
	}
}

// On stop, an external handler in flight finishes with a live context
// and its position is saved; when stop's context ends first, the
// handler's context is cancelled.
func TestAsConsumerStop(t *testing.T) {
	t.Parallel()
	for _, patient := range []bool{true, false} {
		t.Run(fmt.Sprint("patient=", patient), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := dbtest.New(t, "sqlite")
			// fx stops calling stop hooks once stop's context has ended, so
			// Module would not close a database it opened: the test owns
			// this one.
			db, err := eventlog.OpenDB(ctx, b.URL)
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			entered, returned, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var handlerErr error
			// One event a page: a position is saved at the end of a page,
			// and stop starts no new event of the page.
			blocking := consumer.Config{Name: "blocking", PageSize: 1, PollInterval: 10 * time.Millisecond,
				Handle: func(ctx context.Context, ev eventlog.Event) error {
					defer close(returned)
					close(entered)
					select {
					case <-release:
					case <-ctx.Done():
						handlerErr = ctx.Err()
					}
					return handlerErr
				}}
			var buf testio.SyncBuffer
			var log *eventlog.Log
			a := fx.New(fx.NopLogger, fx.Supply(app.Config{}, slog.New(slog.NewTextHandler(&buf, nil))), app.WithDB(db), app.Module,
				app.AsConsumer(blocking), fx.Populate(&log))
			require.NoError(t, a.Start(ctx))
			res, err := log.AppendBatch(ctx, []eventlog.Entry{effectEntry("h"), effectEntry("h")})
			require.NoError(t, err)
			<-entered

			stopCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			stopped := make(chan error, 1)
			go func() { stopped <- a.Stop(stopCtx) }()
			select {
			case err := <-stopped:
				t.Fatalf("stop returned with a handler in flight: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
			if patient {
				close(release)
				require.NoError(t, <-stopped)
				<-returned
				require.NoError(t, handlerErr)
				require.Equal(t, res[0].Event.Seq, statusOf(t, b, "blocking").HandledSeq,
					"the event in flight is saved; the next one was not started")
				return
			}
			cancel() // stop's context ends: the handler's is cancelled
			require.ErrorIs(t, <-stopped, context.Canceled)
			<-returned
			require.ErrorIs(t, handlerErr, context.Canceled)
			eventually(t, "the consumer to stop", func() bool { return strings.Contains(buf.String(), "consumer stopped") })
			require.Zero(t, statusOf(t, b, "blocking").HandledSeq)
		})
	}
}
