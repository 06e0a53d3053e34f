package projection

import (
	"context"
	"regexp"

	"github.com/jmoiron/sqlx"

	"github.com/canonlog/canonlog/eventlog"
	"github.com/canonlog/canonlog/migrations"
)

// Projection is a view derived from the event log.
//
// Apply runs inside the append's transaction: keep it to database work on
// tx (no network calls, no long computation), and make its result
// independent of the order in which concurrently appended events commit —
// insert-only rows keyed by seq, or upserts guarded by seq (see
// docs/projections.md). Reset empties the projection's tables; a rebuild
// calls it and then replays the log from seq 1 in the same transaction.
type Projection interface {
	// Name identifies the projection in checkpoints, locks and the CLI. It
	// must match ^[a-z][a-z0-9_]{0,62}$ and never change.
	Name() string
	// Version is the version of Apply's logic, starting at 1. Bump it when
	// Apply's meaning changes: the projection is then stale until rebuilt.
	Version() int
	// Apply derives the projection's rows from one event.
	Apply(ctx context.Context, tx *sqlx.Tx, ev eventlog.Event) error
	// Reset deletes every row the projection derived.
	Reset(ctx context.Context, tx *sqlx.Tx) error
}

// KindFilter is implemented by projections that only read some kinds of
// event. Dispatch and rebuild skip the other kinds entirely.
type KindFilter interface {
	Kinds() []eventlog.Kind
}

// PayloadMarker is implemented by a projection that derives rows only from
// events whose payload contains one of a few strings, byte for byte as
// stored: a type name, a field value every relevant event carries. Rebuild
// and Verify then read only the events of its kinds that carry a marker
// (eventlog.Filter.PayloadContains): the database picks them out of each
// payload's text without parsing the JSON, and the others are neither
// shipped nor decoded. On a history where most events derive nothing this
// is most of a rebuild's reading (docs/performance.md). Appends still hand
// every event of its kinds to Apply, and a projection that also reads the
// kinds it filters on (KindFilter) is asked nothing new.
//
// The markers are a promise that Rebuild and Verify rely on: Apply derives
// nothing from an event whose payload contains none of them. Such an event
// is not handed to Apply at all, so it is not validated either: an event
// that the projection would now refuse (for example, one appended before
// it was registered) fails a rebuild only if it carries a marker. Mind
// JSON escapes: "f\u0061il" is "fail" to a decoder but does not contain
// the bytes "fail"; include `\u` among the markers, or make sure the
// writers never escape what the markers look for.
// A broken promise shows in Verify, which finds rows in the live view
// (appends apply every event) that a fresh derivation lacks, and so in
// projectiontest.RequireRebuildEquivalent given a generator that yields
// such events. PayloadMarkers must return 1 to
// eventlog.MaxPayloadMarkers strings, each valid for
// eventlog.Filter.PayloadContains; Register checks them.
type PayloadMarker interface {
	PayloadMarkers() []string
}

// BatchApplier is implemented by projections that can derive rows from many
// events at once (for example with one multi-row statement). Rebuild and
// AppendBatch use it; single appends use Apply. ApplyBatch must have the
// same effect as calling Apply on each event in order. To name the event
// that failed, wrap its error with EventError.
type BatchApplier interface {
	ApplyBatch(ctx context.Context, tx *sqlx.Tx, events []eventlog.Event) error
}

// Pipeliner is a BatchApplier whose batch work splits into a pure part —
// PrepareBatch: decoding and deriving rows, no database access, safe to run
// on another goroutine — and the database writes, done by the
// PreparedBatch it returns. Rebuild then prepares the next page while the
// current one is written, so the client's CPU work overlaps the
// database's (unless RebuildOptions.Gentle asks it not to). ApplyBatch
// must equal PrepareBatch followed by WriteTx.
type Pipeliner interface {
	BatchApplier
	PrepareBatch(events []eventlog.Event) (PreparedBatch, error)
}

// PreparedBatch is a page of events that Pipeliner.PrepareBatch derived,
// ready to be written. It writes itself, so a rebuild never hands a
// projection a value of the wrong type.
type PreparedBatch interface {
	// WriteTx writes the derived rows inside tx.
	WriteTx(ctx context.Context, tx *sqlx.Tx) error
}

// Migrator is implemented by projections that bring their own tables. Their
// goose migrations run after canonlog's core migrations, each projection
// with its own version table (canonlog_migrations_<name>). The returned
// set's Name is ignored: the projection's name is used.
type Migrator interface {
	Migrations() migrations.Set
}

// Tabler is implemented by projections that can list their tables. Verify
// uses them to report the rows that differ between the live view and a
// fresh derivation.
type Tabler interface {
	Tables() []string
}

// Checksummer is implemented by projections that can summarize their whole
// state in a string that is equal exactly when the states are equal. Verify
// compares the live checksum with the checksum of a fresh derivation.
type Checksummer interface {
	Checksum(ctx context.Context, tx *sqlx.Tx) (string, error)
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
