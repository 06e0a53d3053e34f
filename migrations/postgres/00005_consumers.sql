-- Consumers (package consumer): each one's durable position in the log,
-- and the events it parked. A position moves only from the one its
-- instance read, under the generation it took the consumer over with:
-- an instance deposed by another (or by a reset) can never move it.

-- +goose Up
CREATE TABLE canonlog_consumers (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- eventlog.Position as JSON: where following resumes.
    position    TEXT NOT NULL,
    -- The seq of the last event handled; 0 before the first.
    handled_seq BIGINT NOT NULL DEFAULT 0 CHECK (handled_seq >= 0),
    -- Bumped by each instance that takes the consumer over, and by a reset.
    generation  BIGINT NOT NULL DEFAULT 0,
    -- What the consumer last ran with: its kinds (comma-separated, '' for
    -- every kind) and its handler's version.
    kinds       TEXT NOT NULL DEFAULT '',
    version     INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- Set when it stopped on an event its handler kept failing.
    failed_seq  BIGINT NULL,
    failure     TEXT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE canonlog_consumer_parked (
    consumer   TEXT NOT NULL REFERENCES canonlog_consumers (name) ON DELETE CASCADE,
    seq        BIGINT NOT NULL, -- the parked event's (no foreign key: event_log stays referenced by projections only)
    attempts   INTEGER NOT NULL CHECK (attempts >= 1),
    failure    TEXT NOT NULL,
    parked_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, seq)
);

-- +goose Down
DROP TABLE canonlog_consumer_parked;
DROP TABLE canonlog_consumers;
