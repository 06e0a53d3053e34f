-- What canonlog_projections records grows so that every binary sharing a
-- database knows every projection in it (see docs/projections.md,
-- "Projections registered by other binaries"):
--
-- kinds: which kinds the projection consumes. NULL when not recorded yet
-- (rows written before this migration: the next Migrate of the binary that
-- registers the projection fills it, and until then it is taken to
-- consume every kind); '*' for every kind; else the kinds in sorted order,
-- comma-separated.
--
-- drift_seq: the last seq appended without applying the projection, by a
-- binary that does not register it and was told to append anyway; the
-- projection is stale while drift_seq > built_seq.
--
-- version 0: installed on a log that already held events of its kinds,
-- and never built since. The row exists from installation on, so that
-- other binaries see the projection before its first rebuild.

-- SQLite cannot change a CHECK constraint in place: the table is rebuilt.

-- +goose Up
CREATE TABLE canonlog_projections_new (
    name       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL CHECK (version >= 0),
    built_seq  INTEGER NOT NULL CHECK (built_seq >= 0),
    -- Same fixed-width UTC text as event_log.ts.
    built_at   TEXT NOT NULL CHECK (length(built_at) = 27),
    kinds      TEXT NULL,
    drift_seq  INTEGER NOT NULL DEFAULT 0 CHECK (drift_seq >= 0)
);
INSERT INTO canonlog_projections_new (name, version, built_seq, built_at)
    SELECT name, version, built_seq, built_at FROM canonlog_projections;
DROP TABLE canonlog_projections;
ALTER TABLE canonlog_projections_new RENAME TO canonlog_projections;

-- +goose Down
CREATE TABLE canonlog_projections_old (
    name       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL CHECK (version >= 1),
    built_seq  INTEGER NOT NULL CHECK (built_seq >= 0),
    built_at   TEXT NOT NULL CHECK (length(built_at) = 27)
);
INSERT INTO canonlog_projections_old (name, version, built_seq, built_at)
    SELECT name, version, built_seq, built_at FROM canonlog_projections WHERE version >= 1;
DROP TABLE canonlog_projections;
ALTER TABLE canonlog_projections_old RENAME TO canonlog_projections;
