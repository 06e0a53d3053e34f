package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/internal/redact"
	"github.com/canonlog/canonlog/projection"
)

// starter holds what Module's lifecycle hooks work on.
type starter struct {
	cfg    Config
	db     *sqlx.DB
	owned  bool // Module opened db, so Module closes it
	m      *projection.Manager
	logger *slog.Logger

	// The background rebuild of StaleRebuildOnline: cancel stops it, done
	// is closed when it has returned. Both nil when none runs.
	cancel context.CancelFunc
	done   chan struct{}
}

// Retry pacing of the background rebuild (StaleRebuildOnline) after a
// failure that may pass (a lost connection, a deadlock).
const (
	rebuildRetryFirst = time.Second
	rebuildRetryMax   = time.Minute
)

// start makes the schema current and refuses (or rebuilds) stale
// projections. It runs to completion before any component that depends on
// the log starts: serving before the schema exists would fail every
// request. When it fails it releases what New acquired itself: fx calls
// OnStop only for hooks whose OnStart succeeded.
func (s *starter) start(ctx context.Context) error {
	if err := s.prepare(ctx); err != nil {
		_ = s.stop(ctx)
		return err
	}
	return nil
}

func (s *starter) prepare(ctx context.Context) error {
	attrs := []any{"backend", s.db.DriverName()}
	if s.owned {
		attrs = append(attrs, "url", redact.URL(s.cfg.databaseURL()))
	} else {
		attrs = append(attrs, "supplied", true)
		if s.cfg.DatabaseURL != "" {
			s.logger.WarnContext(ctx, "canonlog: using the database supplied with app.WithDB/ProvideDB; Config.DatabaseURL is ignored",
				"ignored_url", redact.URL(s.cfg.DatabaseURL))
		}
	}
	s.logger.InfoContext(ctx, "canonlog: database", attrs...)

	if s.cfg.SkipMigrate {
		s.logger.InfoContext(ctx, "canonlog: migrations skipped (Config.SkipMigrate)")
	} else {
		res, err := s.m.Migrate(ctx)
		for _, r := range res {
			s.logger.InfoContext(ctx, "canonlog: migration applied", "set", r.Set, "version", r.Version, "source", r.Source, "duration", r.Duration)
		}
		if err != nil {
			return fmt.Errorf("app: start: migrate: %w", err)
		}
		if len(res) == 0 {
			s.logger.InfoContext(ctx, "canonlog: schema up to date")
		}
	}

	var staleBefore []string
	if s.cfg.Stale == projection.StaleRebuild {
		sts, err := s.m.Status(ctx)
		if err != nil {
			return s.checkError(err)
		}
		for _, st := range sts {
			if st.Registered && st.Stale {
				staleBefore = append(staleBefore, st.Name)
			}
		}
		if len(staleBefore) > 0 {
			s.logger.InfoContext(ctx, "canonlog: rebuilding stale projections before start", "projections", staleBefore)
		}
	}
	sts, err := s.m.CheckStale(ctx, s.cfg.Stale)
	if err != nil {
		return s.checkError(err)
	}
	for _, st := range sts {
		attrs := []any{"name", st.Name, "version", st.Version, "built_version", st.BuiltVersion, "built_seq", st.BuiltSeq}
		switch {
		case !st.Registered:
			attrs = append(attrs[:2], "built_version", st.BuiltVersion, "kinds", kindsAttr(st))
			if s.cfg.AllowDrift {
				s.logger.WarnContext(ctx, "canonlog: projection registered by another binary; appends of its kinds skip it and mark it stale (Config.AllowDrift)", attrs...)
			} else {
				s.logger.InfoContext(ctx, "canonlog: projection registered by another binary; appends of its kinds are refused", attrs...)
			}
		case st.Stale && s.cfg.Stale == projection.StaleRebuildOnline:
			s.logger.WarnContext(ctx, "canonlog: projection is stale; served as it is until its online rebuild swaps the new view in (Config.Stale is rebuild-online)", attrs...)
		case st.Stale:
			s.logger.WarnContext(ctx, "canonlog: projection is stale and served anyway (Config.Stale is ignore); rebuild it", attrs...)
		case slices.Contains(staleBefore, st.Name):
			s.logger.InfoContext(ctx, "canonlog: projection rebuilt", attrs...)
		default:
			s.logger.InfoContext(ctx, "canonlog: projection", attrs...)
		}
	}
	if s.cfg.Stale == projection.StaleRebuildOnline && slices.ContainsFunc(sts, func(st projection.Status) bool { return st.Registered && st.Stale }) {
		s.rebuildInBackground()
	}
	return nil
}

// rebuildInBackground starts the online rebuild of the stale projections
// (StaleRebuildOnline). It runs until every stale projection is rebuilt,
// or a failure that will not pass by itself (logged at ERROR: the views
// stay stale, Status says so, and `canonlog rebuild --stale` is the way
// on), or stop. A failure that may pass is retried with backoff.
func (s *starter) rebuildInBackground() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		wait := rebuildRetryFirst
		for {
			began := time.Now()
			// Gentle unless asked otherwise: the service is serving
			// meanwhile, and its appends matter more than how soon the
			// new view arrives. A projection rebuilt offline (it lists
			// no tables) is rebuilt as if Gentle were not set.
			res, err := s.m.RebuildStale(ctx, &projection.RebuildOptions{Gentle: !s.cfg.StaleRebuildFast})
			for _, r := range res {
				attrs := []any{"name", r.Name, "version", r.Version, "events", r.Events, "seq", r.Seq,
					"duration", r.Duration, "lock_held", r.LockHeld, "online", r.Online, "gentle", r.Gentle}
				if r.OfflineReason != "" {
					attrs = append(attrs, "offline_reason", r.OfflineReason)
				}
				s.logger.InfoContext(ctx, "canonlog: projection rebuilt in the background", attrs...)
			}
			switch {
			case err == nil:
				return
			case ctx.Err() != nil:
				s.logger.InfoContext(context.Background(), "canonlog: background rebuild stopped with the service; the views it had not swapped in stay stale")
				return
			case !eventlog.Retryable(err):
				s.logger.ErrorContext(ctx, "canonlog: background rebuild failed; the stale views stay stale until rebuilt (canonlog rebuild --stale)", "error", err)
				return
			}
			if time.Since(began) > rebuildRetryMax {
				wait = rebuildRetryFirst // it had made progress: start over
			}
			s.logger.WarnContext(ctx, "canonlog: background rebuild failed; retrying", "error", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, rebuildRetryMax)
		}
	}()
}

// checkError explains a failed stale check in terms of the configuration.
func (s *starter) checkError(err error) error {
	var stale *projection.StaleError
	switch {
	case errors.As(err, &stale):
		return fmt.Errorf("app: start: %w; or let the service rebuild them on start with Config.Stale = projection.StaleRebuild (%s=rebuild)", err, EnvStalePolicy)
	case s.cfg.SkipMigrate:
		return fmt.Errorf("app: start: check projections: %w (Config.SkipMigrate is set: apply the migrations first, or unset it / %s=true)", err, EnvMigrate)
	default:
		return fmt.Errorf("app: start: check projections: %w", err)
	}
}

// stop releases what start and New acquired: the log's prepared statements,
// then the database if Module opened it. A supplied database stays open
// for its owner.
func (s *starter) stop(ctx context.Context) error {
	if s.cancel != nil {
		// A rebuild cancelled mid-way leaves the live view and its
		// checkpoint as they were.
		s.cancel()
		select {
		case <-s.done:
		case <-ctx.Done():
			return fmt.Errorf("app: stop: the background rebuild did not stop in time: %w", ctx.Err())
		}
	}
	err := s.m.Close()
	if s.owned {
		err = errors.Join(err, s.db.Close())
	}
	if err != nil {
		return fmt.Errorf("app: stop: %w", err)
	}
	return nil
}

// kindsAttr renders the kinds a projection consumes for a log line.
func kindsAttr(st projection.Status) string {
	if st.AllKinds {
		return "*"
	}
	parts := make([]string, len(st.Kinds))
	for i, k := range st.Kinds {
		parts[i] = string(k)
	}
	return strings.Join(parts, ",")
}
