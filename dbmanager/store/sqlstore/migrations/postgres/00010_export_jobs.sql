-- Bulk exports ($export) from kick-off to deletion (store.ExportJobs): the
-- job, beaten by the process running it, and once finished its files, one
-- row per type (and member, for a group's export; a zero tag otherwise).

-- +goose Up
CREATE TABLE export_jobs (
    id          TEXT   PRIMARY KEY,
    owner       TEXT   NOT NULL,
    request     TEXT   NOT NULL,
    started_us  BIGINT NOT NULL,
    beat_us     BIGINT NOT NULL,
    finished_us BIGINT,
    failure     TEXT
);

CREATE TABLE export_parts (
    job_id TEXT   NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    member BYTEA  NOT NULL CHECK (length(member) = 32),
    type   TEXT   NOT NULL,
    count  BIGINT NOT NULL CHECK (count >= 0),
    ndjson BYTEA  NOT NULL,
    PRIMARY KEY (job_id, type, member)
);

-- +goose Down
DROP TABLE export_parts;
DROP TABLE export_jobs;
