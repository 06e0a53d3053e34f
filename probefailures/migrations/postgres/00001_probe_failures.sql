-- probe_failures: one row per failing sub-result of an enforce-mode probe
-- result. Derived from event_log by the probefailures projection; rebuilt
-- from it with `canonlog rebuild probe_failures`.

-- +goose Up
CREATE TABLE probe_failures (
    event_log_seq BIGINT NOT NULL REFERENCES event_log (seq),
    rollout_id    TEXT NULL,
    host_id       TEXT NOT NULL,
    probe_name    TEXT NOT NULL,
    control_id    TEXT NOT NULL,
    framework     TEXT NOT NULL,
    observed_at   TIMESTAMPTZ NOT NULL,
    -- Keyed by the event: applying an event twice is an error, not a
    -- silent duplicate.
    PRIMARY KEY (event_log_seq, framework, control_id)
);

-- Serves every gate query: failures of a rollout (by host, by control),
-- failing hosts, distinct host counts, per-control summaries.
CREATE INDEX probe_failures_rollout_host_control_idx ON probe_failures (rollout_id, host_id, control_id);

-- +goose Down
DROP TABLE probe_failures;
