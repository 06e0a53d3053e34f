-- Consumers (package consumer): each one's durable position in the log,
-- and the events it parked. A position moves only from the one its
-- instance read, under the generation it took the consumer over with:
-- an instance deposed by another (or by a reset) can never move it.

-- +goose Up
CREATE TABLE canonlog_consumers (
    name        TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63 AND name NOT GLOB '*[^a-z0-9_]*' AND substr(name, 1, 1) BETWEEN 'a' AND 'z'),
    -- eventlog.Position as JSON: where following resumes.
    position    TEXT NOT NULL,
    -- The seq of the last event handled; 0 before the first.
    handled_seq INTEGER NOT NULL DEFAULT 0 CHECK (handled_seq >= 0),
    -- Bumped by each instance that takes the consumer over, and by a reset.
    generation  INTEGER NOT NULL DEFAULT 0,
    -- What the consumer last ran with: its kinds (comma-separated, '' for
    -- every kind) and its handler's version.
    kinds       TEXT NOT NULL DEFAULT '',
    version     INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- Set when it stopped on an event its handler kept failing.
    failed_seq  INTEGER NULL,
    failure     TEXT NULL,
    -- Same fixed-width UTC text as event_log.ts.
    updated_at  TEXT NOT NULL CHECK (length(updated_at) = 27)
);

CREATE TABLE canonlog_consumer_parked (
    consumer   TEXT NOT NULL REFERENCES canonlog_consumers (name) ON DELETE CASCADE,
    seq        INTEGER NOT NULL, -- the parked event's (no foreign key: event_log stays referenced by projections only)
    attempts   INTEGER NOT NULL CHECK (attempts >= 1),
    failure    TEXT NOT NULL,
    parked_at  TEXT NOT NULL CHECK (length(parked_at) = 27),
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE canonlog_consumer_parked;
DROP TABLE canonlog_consumers;
