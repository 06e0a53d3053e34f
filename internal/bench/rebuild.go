package bench

import (
	"context"
	"os"
	"strconv"
	"strings"

	"github.com/canonlog/canonlog/probefailures"
	"github.com/canonlog/canonlog/projection"
)

// rebuild measures rebuilding probe_failures over the filled log:
// projection.Rebuild against DELETE plus the set-based INSERT … SELECT in
// one transaction. Both leave the same rows, so they share the log.
// Rates are log events per second. The peak RSS is the process's VmHWM,
// reset before each canonlog rebuild where Linux allows.
func (r *run) rebuild(ctx context.Context) (Result, error) {
	b, err := r.fill(ctx)
	if err != nil {
		return Result{}, err
	}
	var peak uint64
	ours := func(ctx context.Context) (int, error) {
		_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
		_, err := projection.Rebuild(ctx, b.log, b.reg, &projection.RebuildOptions{Names: []string{probefailures.Name}})
		peak = max(peak, vmHWM())
		return r.cfg.Events, err
	}
	raw := func(ctx context.Context) (int, error) {
		return r.cfg.Events, rawRebuild(ctx, b)
	}
	st, err := r.alternate(ctx, ScenarioRebuild, "events", ours, raw)
	st.PeakRSS = peak
	return st, err
}

// rawRebuild is the raw side of rebuild: DELETE, then the set-based
// derivation of every row, in one transaction.
func rawRebuild(ctx context.Context, b *benchDB) error {
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `DELETE FROM probe_failures`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, deriveRows(b.d), 0); err != nil {
		return err
	}
	return tx.Commit()
}

// vmHWM returns the process's peak resident set size, 0 where
// /proc/self/status is missing.
func vmHWM() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
