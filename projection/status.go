package projection

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
)

// Status describes one projection: a registered one against its
// checkpoint, or one the database records that this registry lacks.
type Status struct {
	Name string
	// Installed reports that the database records the projection (it has a
	// checkpoint row, written when Migrate installs it).
	Installed bool
	// Registered reports that the registry holds the projection. A
	// projection recorded in the database but not registered was installed
	// by another binary (the service that owns it): its view is not
	// checked here, and Version and Stale are zero.
	Registered bool
	// Version is the registered (current code's) version.
	Version int
	// BuiltVersion is the version the live view was built at; 0 when it
	// was never built (installed on a log that held events of its kinds
	// already, or not installed).
	BuiltVersion int
	// BuiltSeq is the log's last seq when the view was last rebuilt (or
	// installed on a log without events of its kinds).
	BuiltSeq int64
	// BuiltAt is when that happened, by the log's clock (for a projection
	// never built: when it was installed).
	BuiltAt time.Time
	// Kinds are the kinds the projection consumes, as registered, or as
	// recorded in the database for one that is not registered; nil with
	// AllKinds set when it consumes every kind.
	Kinds []eventlog.Kind
	// AllKinds reports that the projection consumes every kind. It is also
	// set for an unregistered projection whose kinds were never recorded
	// (checkpoints written before canonlog recorded kinds): such a
	// projection is taken to consume everything until its own binary
	// migrates once.
	AllKinds bool
	// DriftSeq is the last seq appended without applying this projection
	// (by a process that did not register it and was told to append
	// anyway); 0 when none. The view lacks that event until rebuilt.
	DriftSeq int64
	// Stale reports that the view was built by other logic (BuiltVersion !=
	// Version), never built, or drifted (an append skipped it after the
	// last rebuild): it needs a rebuild before it can be trusted. Always
	// false for an unregistered projection, which this binary cannot judge.
	Stale bool
	// Async reports a registered asynchronous projection (Asynchronous):
	// its consumer, named like it, maintains it after commit; its lag is
	// the consumer's (consumer.ReadStatus).
	Async bool
	// Rebuild is the projection's online rebuild as the database shows it,
	// on PostgreSQL: one that is running, or the schemas of one that was
	// stopped (Running false). Nil when there is none, and always on
	// SQLite.
	Rebuild *RebuildState
}

// Statuses are projection statuses in name order.
type Statuses []Status

// Get returns the status of the projection named name.
func (s Statuses) Get(name string) (Status, bool) {
	for _, st := range s {
		if st.Name == name {
			return st, true
		}
	}
	return Status{}, false
}

// Unregistered returns the statuses of the projections the database
// records that the registry lacks.
func (s Statuses) Unregistered() Statuses {
	var out Statuses
	for _, st := range s {
		if !st.Registered {
			out = append(out, st)
		}
	}
	return out
}

// checkpoint is one row of canonlog_projections.
type checkpoint struct {
	Version  int
	Seq      int64
	At       time.Time
	Kinds    sql.NullString // see kindsColumn
	DriftSeq int64
}

// kindsColumn encodes the kinds a projection consumes for the kinds
// column: "*" for every kind (kinds nil), else the kinds sorted and
// comma-separated.
func kindsColumn(kinds []eventlog.Kind) string {
	if kinds == nil {
		return "*"
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = string(k)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// parseKinds decodes the kinds column; all is true for "*" and for a
// value never recorded (NULL), which must be taken to mean anything.
func parseKinds(col sql.NullString) (kinds []eventlog.Kind, all bool) {
	if !col.Valid || col.String == "*" {
		return nil, true
	}
	for _, k := range strings.Split(col.String, ",") {
		if k != "" {
			kinds = append(kinds, eventlog.Kind(k))
		}
	}
	return kinds, false
}

func readCheckpoints(ctx context.Context, q sqlx.QueryerContext) (map[string]checkpoint, error) {
	rows, err := q.QueryxContext(ctx, `SELECT name, version, built_seq, built_at, kinds, drift_seq FROM canonlog_projections`)
	if err != nil {
		return nil, fmt.Errorf("projection: read checkpoints: %w", err)
	}
	defer rows.Close()
	out := make(map[string]checkpoint)
	for rows.Next() {
		var (
			name string
			c    checkpoint
		)
		if err := rows.Scan(&name, &c.Version, &c.Seq, eventlog.ScanTime(&c.At), &c.Kinds, &c.DriftSeq); err != nil {
			return nil, fmt.Errorf("projection: read checkpoints: %w", err)
		}
		out[name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projection: read checkpoints: %w", err)
	}
	return out, nil
}

// writeCheckpoint records that e's view was built at c.Version up to
// c.Seq, with the kinds e consumes. drift_seq is left as it is: it stays
// below the new built_seq, because a rebuild covers every event up to it.
func writeCheckpoint(ctx context.Context, tx *sqlx.Tx, e *registered, c checkpoint) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO canonlog_projections (name, version, built_seq, built_at, kinds)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET version = excluded.version, built_seq = excluded.built_seq, built_at = excluded.built_at, kinds = excluded.kinds`),
		e.name, c.Version, c.Seq, eventlog.FormatTime(c.At), e.kindsColumn())
	if err != nil {
		return fmt.Errorf("projection %s: write checkpoint: %w", e.name, err)
	}
	return nil
}

// kindsColumn is the kinds column of e: the kinds its appends apply it
// to, none ("") for an asynchronous projection, which appends never
// apply, so that other binaries append its kinds freely.
func (e *registered) kindsColumn() string {
	if e.async {
		return ""
	}
	return kindsColumn(e.kindList())
}

// writeCheckpointIfAbsent is writeCheckpoint for installation: it leaves
// a checkpoint that a concurrent Install or Rebuild wrote in place.
func writeCheckpointIfAbsent(ctx context.Context, tx *sqlx.Tx, e *registered, c checkpoint) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO canonlog_projections (name, version, built_seq, built_at, kinds)
VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`),
		e.name, c.Version, c.Seq, eventlog.FormatTime(c.At), e.kindsColumn())
	if err != nil {
		return fmt.Errorf("projection %s: write checkpoint: %w", e.name, err)
	}
	return nil
}

// recordKinds updates the kinds column of registered projections whose
// checkpoint records other kinds (or none yet), so that other binaries
// see what each consumes.
func recordKinds(ctx context.Context, db *sqlx.DB, reg *Registry) error {
	cps, err := readCheckpoints(ctx, db)
	if err != nil {
		return err
	}
	entries, _ := reg.selectEntries(nil)
	for _, e := range entries {
		c, ok := cps[e.name]
		want := e.kindsColumn()
		if !ok || (c.Kinds.Valid && c.Kinds.String == want) {
			continue
		}
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE canonlog_projections SET kinds = ? WHERE name = ?`), want, e.name); err != nil {
			return fmt.Errorf("projection %s: record kinds: %w", e.name, err)
		}
	}
	return nil
}

// ReadStatus reports the status of every projection, in name order: each
// registered one, and each one the database records that reg lacks
// (Registered false). On PostgreSQL it also looks for their online
// rebuilds (Status.Rebuild).
func ReadStatus(ctx context.Context, log *eventlog.Log, reg *Registry) (Statuses, error) {
	cps, err := readCheckpoints(ctx, log.DB())
	if err != nil {
		return nil, err
	}
	sts := statusOf(cps, reg)
	if err := addRebuildStates(ctx, log.DB(), sts); err != nil {
		return nil, err
	}
	return sts, nil
}

// statusOf judges reg's projections, and the others cps records, against
// the checkpoints cps.
func statusOf(cps map[string]checkpoint, reg *Registry) Statuses {
	entries, _ := reg.selectEntries(nil)
	out := make(Statuses, 0, max(len(entries), len(cps)))
	for _, e := range entries {
		s := Status{Name: e.name, Registered: true, Version: e.p.Version(), Kinds: e.kindList(), AllKinds: e.kinds == nil, Async: e.async}
		if c, ok := cps[e.name]; ok {
			s.Installed = true
			s.BuiltVersion, s.BuiltSeq, s.BuiltAt, s.DriftSeq = c.Version, c.Seq, c.At, c.DriftSeq
		}
		s.Stale = s.BuiltVersion != s.Version || s.DriftSeq > s.BuiltSeq
		out = append(out, s)
	}
	for name, c := range cps {
		if reg.lookup(name) != nil {
			continue
		}
		s := Status{Name: name, Installed: true, BuiltVersion: c.Version, BuiltSeq: c.Seq, BuiltAt: c.At, DriftSeq: c.DriftSeq}
		s.Kinds, s.AllKinds = parseKinds(c.Kinds)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}
