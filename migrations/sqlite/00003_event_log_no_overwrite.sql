-- INSERT OR REPLACE (and REPLACE INTO, or an INSERT inside a statement whose
-- conflict clause is REPLACE) over a stored seq or event id deletes the
-- stored row without firing event_log_no_delete (SQLite fires delete
-- triggers for REPLACE only with recursive_triggers on, and that is a
-- per-connection setting) and inserts another in its place. These triggers
-- refuse such an insert before any conflict clause is consulted, on every
-- connection: a conflict clause decides what happens to a violated
-- constraint, and a RAISE in a trigger is none. See docs/architecture.md.
--
-- canonlog's own append leaves seq to the database, and reads the refusal
-- of a stored event id as the duplicate it is (eventlog's
-- storedEventIDRefused matches the message below: keep them in step).

-- +goose Up
-- +goose StatementBegin
CREATE TRIGGER event_log_no_overwrite BEFORE INSERT ON event_log
BEGIN
    -- When the database picks the seq, NEW.seq is -1 here (SQLite leaves it
    -- undefined), so -1 is no collision; event_log_positive_seq makes sure
    -- no stored row has it.
    SELECT RAISE(ABORT, 'event_log is append-only: INSERT over a stored seq refused')
    WHERE NEW.seq <> -1 AND EXISTS (SELECT 1 FROM event_log WHERE seq = NEW.seq);
    SELECT RAISE(ABORT, 'event_log is append-only: INSERT over a stored event_id refused')
    WHERE EXISTS (SELECT 1 FROM event_log WHERE event_id = NEW.event_id);
END;
-- +goose StatementEnd

-- Seqs the database assigns start at 1. A row given seq -1 (or any seq
-- below 1) explicitly could be replaced later, as the check above skips
-- -1: refuse it once the row's seq is known.
-- +goose StatementBegin
CREATE TRIGGER event_log_positive_seq AFTER INSERT ON event_log
WHEN NEW.seq < 1
BEGIN
    SELECT RAISE(ABORT, 'event_log: seq must be positive: leave it to the database');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER event_log_positive_seq;
DROP TRIGGER event_log_no_overwrite;
