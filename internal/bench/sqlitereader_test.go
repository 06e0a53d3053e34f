package bench

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/fleetgen"
	"github.com/canonlog/canonlog/internal/scratchdb"
	"github.com/canonlog/canonlog/projection"
)

// The reader process of BenchmarkSQLiteWritersBesideAReader: it reads the
// log named by readerURLEnv page after page for readerTurn.
const readerURLEnv = "CANONLOG_BENCH_READER_URL"

const readerTurn = 4 * time.Second

// BenchmarkSQLiteWritersBesideAReader measures what rebuild-load showed on
// SQLite: 8 writers append (as rebuild-load's do) alone, while another
// pool of the same process reads the whole log page after page (as an
// online rebuild's build and a verify do), and while another process
// does. Two more turns tell the causes apart (see docs/performance.md):
// the same-process reader reading a copy of the log in another file,
// which shares nothing with the writers' database (no lock, no WAL, no
// checkpoint) but the process; and the same-process reader with the
// garbage collector held off (GC percent -1 under a 1 GiB memory limit)
// for the turn. The turns alternate, 4 s each, three of each; it reports
// the median appends/s of each, and the median of the per-round ratios to
// the writers alone.
//
//	go test ./internal/bench -run '^$' -bench SQLiteWritersBesideAReader -benchtime 1x
func BenchmarkSQLiteWritersBesideAReader(b *testing.B) {
	ctx := context.Background()
	set, err := scratchdb.New("sqlite:"+b.TempDir()+"/canonlog.db", &scratchdb.Config{Prefix: "canonlog_test_bench"})
	if err != nil {
		b.Fatal(err)
	}
	m, err := newMix(fleetgen.Realistic)
	if err != nil {
		b.Fatal(err)
	}
	r := &run{cfg: Config{Events: 100_000, Writers: DefaultWriters}, mix: m, set: set}
	defer func() { _ = r.close() }()
	sdb, err := set.Create(ctx)
	if err != nil {
		b.Fatal(err)
	}
	w, err := r.open(ctx, sdb.URL)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := projection.Migrate(ctx, w.log, w.reg); err != nil {
		b.Fatal(err)
	}
	if err := (&loadRun{r: r, svc: w}).fill(ctx); err != nil {
		b.Fatal(err)
	}
	rd, err := r.open(ctx, sdb.URL)
	if err != nil {
		b.Fatal(err)
	}
	// The fill ended with a TRUNCATE checkpoint: the file holds the log.
	path, _ := eventlog.SQLiteFile(sdb.URL)
	copyPath := b.TempDir() + "/copy.db"
	if err := copyFile(path, copyPath); err != nil {
		b.Fatal(err)
	}
	cp, err := r.open(ctx, "sqlite:"+copyPath)
	if err != nil {
		b.Fatal(err)
	}

	next := atomic.Int64{}
	next.Store(int64(r.cfg.Events))
	turn := func(reader func(stop *atomic.Bool) error) float64 {
		var (
			stop      atomic.Bool
			n         atomic.Int64
			writers   sync.WaitGroup
			readerErr error
			done      = make(chan struct{})
		)
		// Untimed, so that no turn pays for the garbage of the one before
		// (the GC-off turn leaves up to 1 GiB).
		runtime.GC()
		if reader != nil {
			go func() {
				defer close(done)
				readerErr = reader(&stop)
			}()
		} else {
			close(done)
		}
		start := time.Now()
		for range r.cfg.Writers {
			writers.Go(func() {
				for time.Since(start) < readerTurn {
					if _, err := w.log.Append(ctx, r.mix.agentEntry(next.Add(1), time.Now())); err == nil {
						n.Add(1)
					}
				}
			})
		}
		writers.Wait()
		rate := float64(n.Load()) / time.Since(start).Seconds()
		stop.Store(true)
		<-done
		if readerErr != nil {
			b.Fatal(readerErr)
		}
		return rate
	}
	readAll := func(from *benchDB, stop *atomic.Bool) error {
		for !stop.Load() {
			for _, err := range from.bare.Pages(ctx, 0, nil) {
				if err != nil {
					return err
				}
				if stop.Load() {
					break
				}
			}
		}
		return nil
	}
	inProcess := func(stop *atomic.Bool) error { return readAll(rd, stop) }
	otherFile := func(stop *atomic.Bool) error { return readAll(cp, stop) }
	noGC := func(stop *atomic.Bool) error {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 30))
		defer debug.SetGCPercent(debug.SetGCPercent(-1))
		return readAll(rd, stop)
	}
	otherProcess := func(*atomic.Bool) error {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestSQLiteReaderProcess$", "-test.bench", "^$")
		cmd.Env = append(os.Environ(), readerURLEnv+"="+sdb.URL)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Log(string(out))
		}
		return err
	}
	names := []string{"alone", "inproc", "otherproc", "inproc-otherfile", "inproc-nogc"}
	readers := []func(*atomic.Bool) error{nil, inProcess, otherProcess, otherFile, noGC}
	rates := make([][]float64, len(names))
	b.ResetTimer()
	for range b.N {
		for round := range 3 {
			for k := range names {
				i := (k + round) % len(names)
				rates[i] = append(rates[i], turn(readers[i]))
			}
		}
	}
	for i, name := range names {
		b.ReportMetric(median(rates[i]), name+"-appends/s")
		if i > 0 {
			var ratios []float64
			for j := range rates[i] {
				ratios = append(ratios, rates[i][j]/rates[0][j])
			}
			b.ReportMetric(median(ratios), name+"/alone")
		}
	}
}

// TestSQLiteReaderProcess is the other process of
// BenchmarkSQLiteWritersBesideAReader; it skips unless that benchmark
// started it.
func TestSQLiteReaderProcess(t *testing.T) {
	url := os.Getenv(readerURLEnv)
	if url == "" {
		t.Skip("the reader process of BenchmarkSQLiteWritersBesideAReader")
	}
	ctx := context.Background()
	db, err := eventlog.OpenDB(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log, err := eventlog.New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(readerTurn)
	for time.Now().Before(deadline) {
		for _, err := range log.Pages(ctx, 0, nil) {
			if err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				break
			}
		}
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}
