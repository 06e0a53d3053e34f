package natsforward_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/dbtest"
	"github.com/canonlog/canonlog/internal/natstest"
	"github.com/canonlog/canonlog/natsforward"
)

// The kill test SIGKILLs a forwarder process at random moments while
// writers append, and checks at the end that the stream equals the log.
// Environment:
//
//	CANONLOG_FORWARD_KILLS  kills per backend (default 2; the long run is 20 or more)
//	CANONLOG_FORWARD_SEED   seed of the random choices (default: from the clock; logged)
const (
	envForwardHelper = "CANONLOG_FORWARD_HELPER" // "1" in the forwarder process; unset in a normal test run
	envForwardDB     = "CANONLOG_FORWARD_DB"
	envForwardNATS   = "CANONLOG_FORWARD_NATS"
	envForwardStream = "CANONLOG_FORWARD_STREAM"
	envForwardPage   = "CANONLOG_FORWARD_PAGE"
	envForwardKills  = "CANONLOG_FORWARD_KILLS"
	envForwardSeed   = "CANONLOG_FORWARD_SEED"

	defaultForwardKills = 2
)

// killKinds are the kinds the killed forwarder forwards; the writers
// append others too.
var killKinds = []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect}

// TestForwardHelperProcess is the forwarder TestForwardKills kills: it
// is not a test of its own and skips unless started by it. It prints
// "ready" once connected, then forwards until it is killed.
func TestForwardHelperProcess(t *testing.T) {
	if os.Getenv(envForwardHelper) != "1" {
		t.Skip("started by TestForwardKills only")
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "forward helper: "+format+"\n", args...)
		os.Exit(1)
	}
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, os.Getenv(envForwardDB))
	if err != nil {
		fail("open: %v", err)
	}
	log, err := eventlog.New(db, nil)
	if err != nil {
		fail("log: %v", err)
	}
	nc, err := nats.Connect(os.Getenv(envForwardNATS))
	if err != nil {
		fail("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fail("jetstream: %v", err)
	}
	page, _ := strconv.Atoi(os.Getenv(envForwardPage))
	f, err := natsforward.New(log, js, &natsforward.Config{Stream: os.Getenv(envForwardStream), Kinds: killKinds, PageSize: page,
		PollInterval: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fail("new: %v", err)
	}
	fmt.Println("ready")
	if err := f.Run(ctx); err != nil {
		fail("run: %v", err)
	}
	fail("Run returned")
}

// killWriters appends until ctx ends: batches of up to 40 events of
// several kinds, and on PostgreSQL, one time in four, a few events in a
// transaction held open 50-300 ms (half of them also held as long
// before they take their seqs), so that commit order is not seq order.
func killWriters(ctx context.Context, t *testing.T, fx *fixture, seed uint64, n int) (wait func() int64) {
	t.Helper()
	kinds := []eventlog.Kind{eventlog.KindAgentEvent, eventlog.KindEffect, eventlog.KindPlanAction}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		errs  []error
	)
	for w := range n {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			entries := func() []eventlog.Entry {
				out := make([]eventlog.Entry, 1+rng.IntN(40))
				for i := range out {
					out[i] = eventlog.Entry{Kind: kinds[rng.IntN(len(kinds))], HostID: fmt.Sprintf("host-%d.example.com", rng.IntN(50)),
						Payload: json.RawMessage(fmt.Sprintf(`{"w":%d,"n":%d}`, w, rng.IntN(1e6)))}
				}
				return out
			}
			for ctx.Err() == nil {
				var err error
				es := entries()
				if fx.b.Dialect == eventlog.Postgres && rng.IntN(4) == 0 {
					es = es[:min(len(es), 3)]
					err = func() error {
						tx, err := fx.log.DB().BeginTxx(ctx, nil)
						if err != nil {
							return err
						}
						defer func() { _ = tx.Rollback() }()
						hold := func() { time.Sleep(time.Duration(50+rng.IntN(251)) * time.Millisecond) }
						if rng.IntN(2) == 0 {
							// The transaction id is taken before the seqs:
							// it follows, in commit order, events with
							// higher seqs that commit first.
							if _, err := tx.ExecContext(ctx, `SELECT pg_current_xact_id()`); err != nil {
								return err
							}
							hold()
						}
						if _, err := fx.log.AppendTx(ctx, tx, es...); err != nil {
							return err
						}
						hold()
						return tx.Commit()
					}()
				} else {
					_, err = fx.log.AppendBatch(ctx, es)
				}
				mu.Lock()
				if err == nil {
					total += int64(len(es))
				} else if ctx.Err() == nil {
					errs = append(errs, err)
				}
				mu.Unlock()
				time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
			}
		})
	}
	return func() int64 {
		wg.Wait()
		require.Empty(t, errs, "the writers failed")
		return total
	}
}

// TestForwardKills SIGKILLs a forwarder process (TestForwardHelperProcess)
// at random moments — starting up, waiting for its predecessor's lock,
// publishing a page, waiting for its acknowledgements, saving its
// position — while writers append, then lets a forwarder catch up, and
// checks that the stream holds every event of its kinds once, in the
// log's commit order: the order a fresh follower reads.
func TestForwardKills(t *testing.T) {
	t.Parallel()
	kills := defaultForwardKills
	if s := os.Getenv(envForwardKills); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, envForwardKills)
		kills = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envForwardSeed); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, envForwardSeed)
		seed = n
	}
	t.Logf("%s=%d %s=%d", envForwardSeed, seed, envForwardKills, kills)
	dbtest.Run(t, func(t *testing.T, backend string) {
		start := time.Now()
		fx := setup(t, backend)
		natsURL := fx.js.Conn().ConnectedUrl()
		rng := rand.New(rand.NewPCG(seed, uint64(len(backend))))
		ctx, stopWriters := context.WithCancel(context.Background())
		defer stopWriters()
		// A backlog keeps the forwarders busy, so that most kills land
		// while a page is in flight.
		for i := range 10 {
			backlog := make([]eventlog.Entry, 300)
			for j := range backlog {
				backlog[j] = eventlog.Entry{Kind: killKinds[j%2], HostID: "host-" + strconv.Itoa(j%7),
					Payload: json.RawMessage(fmt.Sprintf(`{"backlog":%d}`, i*300+j))}
			}
			_, err := fx.log.AppendBatch(ctx, backlog)
			require.NoError(t, err)
		}
		wait := killWriters(ctx, t, fx, seed, 3)

		// resumedPast counts the forwarders that found events in the
		// stream past the saved position: their predecessor was killed
		// between a page's publish and the save of its position.
		var inStartup, progressed, resumedPast int
		for k := range kills {
			tag := fmt.Sprintf("%s_fwd%d", fx.b.Schema, k)
			cmd := exec.Command(os.Args[0], "-test.run=^TestForwardHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), envForwardHelper+"=1", envForwardDB+"="+fx.b.SessionURL(tag), envForwardNATS+"="+natsURL,
				envForwardStream+"="+fx.name, envForwardPage+"="+strconv.Itoa(1+rng.IntN(300)))
			var out, errOut syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			before, err := fx.stream.Info(context.Background())
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			// The last forwarder, when none has published yet (a busy
			// machine, or kills drawn in start-up), is killed only once
			// the stream has grown: the run must kill one mid-work.
			mustProgress := k == kills-1 && progressed == 0
			if draw := rng.IntN(5); draw > 0 || mustProgress {
				// Most kills land once it forwards; some while it starts.
				for deadline := time.Now().Add(30 * time.Second); !out.contains("ready") && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
				for deadline := time.Now().Add(time.Minute); mustProgress && time.Now().Before(deadline); {
					info, err := fx.stream.Info(context.Background())
					require.NoError(t, err)
					if info.State.Msgs > before.State.Msgs {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(time.Duration(100+rng.IntN(1400)) * time.Millisecond)
			} else {
				time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			}
			if !out.contains("ready") {
				inStartup++
			}
			_ = cmd.Process.Kill()
			err = cmd.Wait()
			require.True(t, killedBySIGKILL(err), "the forwarder ended before the kill (%v): %s", err, errOut.String())
			if strings.Contains(errOut.String(), "past the saved position") {
				resumedPast++
			}
			after, err := fx.stream.Info(context.Background())
			require.NoError(t, err)
			if after.State.Msgs > before.State.Msgs {
				progressed++
			}
		}
		stopWriters()
		appended := wait()

		// A forwarder catches up.
		var want []int64
		fol, err := fx.log.NewFollower(eventlog.Position{}, &eventlog.FollowOptions{Filter: eventlog.Filter{Kinds: killKinds}, PageSize: 5000})
		require.NoError(t, err)
		for {
			evs, err := fol.Poll(context.Background())
			require.NoError(t, err)
			for _, ev := range evs {
				want = append(want, ev.Seq)
			}
			if len(evs) == 0 && fol.CaughtUp() {
				break
			}
		}
		f, err := natsforward.New(fx.log, fx.js, &natsforward.Config{Stream: fx.name, Kinds: killKinds, PollInterval: 10 * time.Millisecond,
			Logger: quiet()})
		require.NoError(t, err)
		stop := running(t, f)
		waitMsgs(t, fx.stream, uint64(len(want)))
		require.NoError(t, stop())

		msgs := natstest.Messages(t, fx.stream)
		got := make([]int64, len(msgs))
		for i, m := range msgs {
			got[i] = seqOf(t, m)
		}
		require.Equal(t, want, got, "the stream, in order, is the log's events of its kinds in commit order")
		inversions := 0
		for i := 1; i < len(want); i++ {
			if want[i] < want[i-1] {
				inversions++
			}
		}
		if backend == "sqlite" {
			require.Zero(t, inversions, "SQLite commits in seq order")
		}
		t.Logf("%s: %d kills (%d in start-up, %d after the stream grew), %d restarts found events past the saved position, "+
			"%d events appended, %d forwarded (%d out of seq order), %s",
			backend, kills, inStartup, progressed, resumedPast, appended, len(want), inversions, time.Since(start).Round(time.Millisecond))
		require.Positive(t, progressed, "no forwarder lived long enough to publish: the test exercised nothing")
	})
}

// syncBuffer is a process's output, read while the process writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf.Bytes(), []byte(s))
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// killedBySIGKILL reports whether SIGKILL ended the process.
func killedBySIGKILL(err error) bool {
	ee, ok := err.(*exec.ExitError)
	if !ok {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
