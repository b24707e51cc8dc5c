-- Bulk exports ($export) from kick-off to deletion (store.ExportJobs): the
-- job, beaten by the process running it, and once finished its files, one
-- row per type (and member, for a group's export; a zero tag otherwise).

-- +goose Up
CREATE TABLE export_jobs (
    id          TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    started_us  INTEGER NOT NULL,
    beat_us     INTEGER NOT NULL,
    finished_us INTEGER,
    failure     TEXT
) STRICT;

CREATE TABLE export_parts (
    job_id TEXT    NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    member BLOB    NOT NULL CHECK (length(member) = 32),
    type   TEXT    NOT NULL,
    count  INTEGER NOT NULL CHECK (count >= 0),
    ndjson BLOB    NOT NULL,
    PRIMARY KEY (job_id, type, member)
) STRICT, WITHOUT ROWID;

-- +goose Down
DROP TABLE export_parts;
DROP TABLE export_jobs;
