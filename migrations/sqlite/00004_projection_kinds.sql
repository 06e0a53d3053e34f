-- Which kinds each projection consumes, and the last event appended
-- without it. A process that appends must apply every projection that
-- consumes the entry's kind; one whose binary does not register a
-- projection recorded here refuses such appends (see docs/projections.md,
-- "Projections registered by other binaries"), or, when told to go ahead,
-- records the seq in drift_seq so that the projection reads as stale until
-- it is rebuilt.
--
-- kinds: NULL when not recorded yet (rows written before this migration:
-- the next Migrate of the binary that registers the projection fills it),
-- '*' for every kind, else the kinds in sorted order, comma-separated.

-- +goose Up
ALTER TABLE canonlog_projections ADD COLUMN kinds TEXT NULL;
ALTER TABLE canonlog_projections ADD COLUMN drift_seq INTEGER NOT NULL DEFAULT 0 CHECK (drift_seq >= 0);

-- +goose Down
ALTER TABLE canonlog_projections DROP COLUMN drift_seq;
ALTER TABLE canonlog_projections DROP COLUMN kinds;
