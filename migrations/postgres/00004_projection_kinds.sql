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

-- +goose Up
ALTER TABLE canonlog_projections ADD COLUMN kinds TEXT NULL;
ALTER TABLE canonlog_projections ADD COLUMN drift_seq BIGINT NOT NULL DEFAULT 0 CHECK (drift_seq >= 0);
ALTER TABLE canonlog_projections DROP CONSTRAINT canonlog_projections_version_check;
ALTER TABLE canonlog_projections ADD CONSTRAINT canonlog_projections_version_check CHECK (version >= 0);

-- +goose Down
DELETE FROM canonlog_projections WHERE version = 0;
ALTER TABLE canonlog_projections DROP CONSTRAINT canonlog_projections_version_check;
ALTER TABLE canonlog_projections ADD CONSTRAINT canonlog_projections_version_check CHECK (version >= 1);
ALTER TABLE canonlog_projections DROP COLUMN drift_seq;
ALTER TABLE canonlog_projections DROP COLUMN kinds;
