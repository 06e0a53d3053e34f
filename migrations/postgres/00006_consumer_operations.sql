-- Consumers (package consumer), for their operators: when a consumer's
-- kinds or handler version last changed, and from what; and the parked
-- events an operator asked to be tried again.

-- +goose Up
ALTER TABLE canonlog_consumers
    ADD COLUMN changed_at   TIMESTAMPTZ NULL,
    -- What it ran with before: "kinds=…; version=…".
    ADD COLUMN changed_from TEXT NULL;

-- Set by consumer.RetryParked (canonlog consumers parked retry); the
-- running instance tries the event once more, and deletes the row when
-- its handler succeeds or clears this when it fails.
ALTER TABLE canonlog_consumer_parked ADD COLUMN retry_requested_at TIMESTAMPTZ NULL;

-- +goose Down
ALTER TABLE canonlog_consumer_parked DROP COLUMN retry_requested_at;
ALTER TABLE canonlog_consumers DROP COLUMN changed_from, DROP COLUMN changed_at;
