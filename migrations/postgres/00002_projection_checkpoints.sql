-- What each projection was last built at: written by a rebuild (or when a
-- projection is installed on an empty log), never by an append, so appends
-- do not contend on a shared row.

-- +goose Up
CREATE TABLE canonlog_projections (
    name       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL CHECK (version >= 1),
    built_seq  BIGINT NOT NULL CHECK (built_seq >= 0),
    built_at   TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE canonlog_projections;
