-- rollout_progress: per rollout and host, the last agent event fleetd
-- received. Derived from event_log by fleetd's rolloutProgress projection;
-- rebuilt from it with `fleetd rebuild rollout_progress`.

-- +goose Up
CREATE TABLE rollout_progress (
    rollout_id    TEXT NOT NULL,
    host_id       TEXT NOT NULL,
    last_type     TEXT NOT NULL,
    last_status   TEXT NOT NULL,
    -- Fixed-width UTC text (2006-01-02T15:04:05.000000Z): text order is
    -- time order, as in event_log.ts.
    last_seen_at  TEXT NOT NULL CHECK (length(last_seen_at) = 27),
    event_log_seq INTEGER NOT NULL REFERENCES event_log (seq),
    PRIMARY KEY (rollout_id, host_id)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE rollout_progress;
