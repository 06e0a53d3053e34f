-- The canonical, append-only event log. See docs/architecture.md.

-- +goose Up
CREATE TABLE event_log (
    -- AUTOINCREMENT: a seq is never taken again once a row held it; the
    -- counter rolls back with a failed append, whose seqs go to the next.
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- UTC, fixed width 'YYYY-MM-DDTHH:MM:SS.ffffffZ' so text order is time
    -- order. Supplied by the caller's clock; deliberately no DEFAULT.
    ts         TEXT NOT NULL CHECK (length(ts) = 27),
    kind       TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 64 AND kind NOT GLOB '*[^a-z0-9_]*' AND substr(kind, 1, 1) BETWEEN 'a' AND 'z'),
    host_id    TEXT NULL CHECK (host_id <> ''),
    rollout_id TEXT NULL CHECK (rollout_id <> ''),
    -- Stored as the exact text appended.
    payload    TEXT NOT NULL CHECK (json_valid(payload)),
    event_id   TEXT NULL UNIQUE CHECK (event_id <> '')
);

CREATE INDEX event_log_host_id_seq_idx ON event_log (host_id, seq);
CREATE INDEX event_log_rollout_id_seq_idx ON event_log (rollout_id, seq);
CREATE INDEX event_log_kind_seq_idx ON event_log (kind, seq);

-- +goose StatementBegin
CREATE TRIGGER event_log_no_update BEFORE UPDATE ON event_log
BEGIN
    SELECT RAISE(ABORT, 'event_log is append-only: UPDATE refused');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER event_log_no_delete BEFORE DELETE ON event_log
BEGIN
    SELECT RAISE(ABORT, 'event_log is append-only: DELETE refused');
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE event_log;
