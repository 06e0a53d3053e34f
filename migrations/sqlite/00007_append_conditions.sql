-- Conditional appends (eventlog.Log.If) need nothing of SQLite's schema:
-- with one writer at a time, the check is a query inside the append's
-- write transaction. This version keeps the dialects' numbering in step
-- with PostgreSQL's, which adds the function the check runs.

-- +goose Up
SELECT 1;

-- +goose Down
SELECT 1;
