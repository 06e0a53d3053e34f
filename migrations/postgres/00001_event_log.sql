-- The canonical, append-only event log. See docs/architecture.md.

-- +goose Up
CREATE TABLE event_log (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Supplied by the caller's clock; deliberately no DEFAULT.
    ts         TIMESTAMPTZ NOT NULL,
    kind       TEXT NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    host_id    TEXT NULL CHECK (host_id <> ''),
    rollout_id TEXT NULL CHECK (rollout_id <> ''),
    -- json, not jsonb: the payload's bytes are kept exactly as appended.
    payload    JSON NOT NULL,
    event_id   TEXT NULL UNIQUE CHECK (event_id <> ''),
    -- The appending transaction, so followers can read the log gap-free.
    tx_id      XID8 NOT NULL DEFAULT pg_current_xact_id()
);

-- Each documented query reads its rows from an index already in seq order.
CREATE INDEX event_log_host_id_seq_idx ON event_log (host_id, seq);
CREATE INDEX event_log_rollout_id_seq_idx ON event_log (rollout_id, seq);
CREATE INDEX event_log_kind_seq_idx ON event_log (kind, seq);
CREATE INDEX event_log_tx_id_seq_idx ON event_log (tx_id, seq);

-- +goose StatementBegin
CREATE FUNCTION canonlog_event_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'event_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'append a new event instead of changing history';
END;
$$;
-- +goose StatementEnd

-- Statement-level, so even an UPDATE or DELETE matching no row is refused.
CREATE TRIGGER event_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION canonlog_event_log_append_only();

-- +goose Down
DROP TABLE event_log;
DROP FUNCTION canonlog_event_log_append_only();
