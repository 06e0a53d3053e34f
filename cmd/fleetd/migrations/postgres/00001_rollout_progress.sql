-- rollout_progress: per rollout and host, the last agent event fleetd
-- received. Derived from event_log by fleetd's rolloutProgress projection;
-- rebuilt from it with `fleetd rebuild rollout_progress`.

-- +goose Up
CREATE TABLE rollout_progress (
    rollout_id    TEXT NOT NULL,
    host_id       TEXT NOT NULL,
    last_type     TEXT NOT NULL,
    last_status   TEXT NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    -- The event the row comes from. Updates only ever move it forward, so
    -- the row is the same whatever order concurrent appends commit in.
    event_log_seq BIGINT NOT NULL REFERENCES event_log (seq),
    PRIMARY KEY (rollout_id, host_id)
);

-- +goose Down
DROP TABLE rollout_progress;
