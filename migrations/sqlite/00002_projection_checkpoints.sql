-- What each projection was last built at: written by a rebuild (or when a
-- projection is installed on an empty log), never by an append, so appends
-- do not contend on a shared row.

-- +goose Up
CREATE TABLE canonlog_projections (
    name       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL CHECK (version >= 1),
    built_seq  INTEGER NOT NULL CHECK (built_seq >= 0),
    -- Same fixed-width UTC text as event_log.ts.
    built_at   TEXT NOT NULL CHECK (length(built_at) = 27)
);

-- +goose Down
DROP TABLE canonlog_projections;
