-- probe_failures: one row per failing sub-result of an enforce-mode probe
-- result. Derived from event_log by the probefailures projection; rebuilt
-- from it with `canonlog rebuild probe_failures`.

-- +goose Up
CREATE TABLE probe_failures (
    event_log_seq INTEGER NOT NULL REFERENCES event_log (seq),
    rollout_id    TEXT NULL,
    host_id       TEXT NOT NULL,
    probe_name    TEXT NOT NULL,
    control_id    TEXT NOT NULL,
    framework     TEXT NOT NULL,
    -- Same fixed-width UTC text as event_log.ts.
    observed_at   TEXT NOT NULL CHECK (length(observed_at) = 27),
    PRIMARY KEY (event_log_seq, framework, control_id)
) WITHOUT ROWID;

CREATE INDEX probe_failures_rollout_host_control_idx ON probe_failures (rollout_id, host_id, control_id);

-- +goose Down
DROP TABLE probe_failures;
