-- canonlog on PostgreSQL with least privilege: step 2 of 2, run by the
-- owner after every 'canonlog migrate up' (a new projection brings new
-- tables), e.g. psql -v schema=canonlog -v svc=canonlog_svc -f grants.sql
--
-- The log: read and append only. No UPDATE, DELETE or TRUNCATE: even
-- without the append-only trigger the service cannot change history.
GRANT SELECT, INSERT ON :"schema".event_log TO :"svc";
-- A batch append takes its seqs with nextval before it COPYs the rows.
GRANT USAGE ON SEQUENCE :"schema".event_log_seq_seq TO :"svc";
-- Projection checkpoints: written by rebuilds, read by status checks.
GRANT SELECT, INSERT, UPDATE ON :"schema".canonlog_projections TO :"svc";
-- Each projection's tables: written in every append, emptied (DELETE, not
-- TRUNCATE) and refilled by rebuild and verify. One line per projection.
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".probe_failures TO :"svc";
-- Migration history, read by status (one version table per set).
GRANT SELECT ON :"schema".canonlog_migrations, :"schema".canonlog_migrations_probe_failures TO :"svc";
