-- canonlog on PostgreSQL with least privilege: step 2 of 2, run by the
-- owner after every 'canonlog migrate up' (a new projection brings new
-- tables), e.g. psql -v schema=canonlog -v svc=canonlog_svc -f grants.sql
--
-- The log: read, and append only the columns an append writes. No UPDATE,
-- DELETE or TRUNCATE: even without the append-only trigger the service
-- cannot change history; and seq and tx_id are the database's to assign.
-- The REVOKEs drop what an older version of this file granted (INSERT on
-- every column, nextval on the sequence).
REVOKE INSERT ON :"schema".event_log FROM :"svc";
GRANT SELECT, INSERT (ts, kind, host_id, rollout_id, payload, event_id) ON :"schema".event_log TO :"svc";
-- The trigger that refuses an explicit seq compares it with currval.
REVOKE ALL ON SEQUENCE :"schema".event_log_seq_seq FROM :"svc";
GRANT SELECT ON SEQUENCE :"schema".event_log_seq_seq TO :"svc";
-- Projection checkpoints: written by rebuilds, read by status checks.
GRANT SELECT, INSERT, UPDATE ON :"schema".canonlog_projections TO :"svc";
-- Each projection's tables: written in every append, emptied (DELETE, not
-- TRUNCATE) and refilled by rebuild and verify. One line per projection.
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".probe_failures TO :"svc";
-- Migration history, read by status (one version table per set).
GRANT SELECT ON :"schema".canonlog_migrations, :"schema".canonlog_migrations_probe_failures TO :"svc";
