-- canonlog on PostgreSQL with least privilege: step 1 of 2, run once by a
-- superuser (or a role with CREATEROLE that may CREATE in the database),
-- e.g. psql -v schema=canonlog -v owner=canonlog_owner -v svc=canonlog_svc -f roles.sql
--
-- The owner runs the migrations ('canonlog migrate up', or the service
-- with migrations on start) and owns every table canonlog creates. The
-- service role runs the service with migrations off (CANONLOG_MIGRATE=false)
-- and owns nothing. Give both a PASSWORD (or another authentication) as your
-- server requires; the service's URL sets search_path to the schema.
CREATE ROLE :"owner" LOGIN;
CREATE ROLE :"svc" LOGIN;
CREATE SCHEMA :"schema" AUTHORIZATION :"owner";
-- The service may look up objects in the schema, not create any.
GRANT USAGE ON SCHEMA :"schema" TO :"svc";
-- The service also needs CONNECT and TEMPORARY on the database (projection
-- verify copies the live rows into temporary tables). PostgreSQL grants
-- both to PUBLIC by default; if you revoked them, grant them back:
--   GRANT CONNECT, TEMPORARY ON DATABASE <database> TO <svc>;
