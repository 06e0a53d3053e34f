-- The gate's failure listings page in (host_id, control_id,
-- event_log_seq, framework) order within a rollout. An index holding that
-- whole order serves a page by reading its own rows and no others, with
-- no sort; the first index held only (rollout_id, host_id, control_id)
-- and left each page to sort the rest of its host and control.

-- +goose Up
DROP INDEX probe_failures_rollout_host_control_idx;
CREATE INDEX probe_failures_rollout_page_idx ON probe_failures (rollout_id, host_id, control_id, event_log_seq, framework);

-- +goose Down
DROP INDEX probe_failures_rollout_page_idx;
CREATE INDEX probe_failures_rollout_host_control_idx ON probe_failures (rollout_id, host_id, control_id);
