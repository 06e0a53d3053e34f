-- seq and tx_id are the database's to assign. An explicit seq (INSERT …
-- OVERRIDING SYSTEM VALUE, or COPY with a seq column) could claim a
-- position ahead of the log's head, so that later appends fail on the
-- primary key, or backdate an event into a gap; an explicit tx_id could
-- hide an event from followers, which read in (tx_id, seq) order. See
-- docs/architecture.md.
--
-- The trigger holds for every role, the owner included: a data-only
-- restore, which copies stored seqs and tx_ids back, runs with the trigger
-- disabled (pg_restore --disable-triggers, or ALTER TABLE event_log
-- DISABLE TRIGGER event_log_assigned_only as the owner, ENABLE after). A
-- full pg_dump restore needs nothing: it creates triggers after the data.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION canonlog_event_log_assigned_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tx_id <> pg_current_xact_id() THEN
        RAISE EXCEPTION 'event_log: explicit tx_id % refused: the database records the appending transaction', NEW.tx_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'leave tx_id out of the INSERT or COPY column list';
    END IF;
    RAISE EXCEPTION 'event_log: explicit seq % refused: the database assigns seqs', NEW.seq
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'leave seq out of the INSERT or COPY column list, without OVERRIDING SYSTEM VALUE';
END;
$$;
-- +goose StatementEnd

-- A row whose seq came from the column's default drew it with nextval just
-- before this trigger, so it equals currval; any other seq was given. The
-- WHEN clause is evaluated without entering PL/pgSQL, so an ordinary append
-- pays two comparisons per row. currval needs SELECT (or USAGE) on the
-- sequence: grant it to every role that appends. In a session that never
-- drew a seq, currval itself fails ("not yet defined in this session"),
-- which refuses the explicit seq too. The one explicit seq that passes is
-- the last one the session itself drew: no other row can ever get it, so
-- (for a role allowed to name seq at all) it is as good as a late commit.
CREATE TRIGGER event_log_assigned_only
    BEFORE INSERT ON event_log
    FOR EACH ROW
    WHEN (NEW.seq <> currval('event_log_seq_seq'::regclass) OR NEW.tx_id <> pg_current_xact_id())
    EXECUTE FUNCTION canonlog_event_log_assigned_only();

-- +goose Down
DROP TRIGGER event_log_assigned_only ON event_log;
DROP FUNCTION canonlog_event_log_assigned_only();
