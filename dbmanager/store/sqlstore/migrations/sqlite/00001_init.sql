-- Records database of one provider gateway (SQLite). Times are Unix
-- microseconds (UTC); hashes and tags are 32-byte blobs; raw JSON is stored
-- byte for byte as received.

-- +goose Up
CREATE TABLE patients (
    id           TEXT    PRIMARY KEY,
    tag          BLOB    UNIQUE CHECK (tag IS NULL OR length(tag) = 32),
    created_us   INTEGER NOT NULL,
    seq          INTEGER NOT NULL DEFAULT 0,  -- latest change
    anchored_seq INTEGER NOT NULL DEFAULT -1  -- change covered by the last anchor (-1: never anchored)
) STRICT;

-- Current version of every resource (its JSON is in resource_versions).
CREATE TABLE resources (
    rtype           TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    patient_id      TEXT    REFERENCES patients(id),  -- NULL: shared resource
    last_updated_us INTEGER NOT NULL,
    sha256          BLOB    NOT NULL CHECK (length(sha256) = 32),
    seq             INTEGER NOT NULL,                  -- patient change that wrote it (0: shared)
    PRIMARY KEY (rtype, id)
) STRICT;
CREATE INDEX resources_patient ON resources (patient_id, rtype, id);

-- Every version ever stored, the current one included (append-only).
CREATE TABLE resource_versions (
    rtype           TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    patient_id      TEXT    REFERENCES patients(id),
    last_updated_us INTEGER NOT NULL,
    sha256          BLOB    NOT NULL,
    seq             INTEGER NOT NULL,
    raw             BLOB    NOT NULL,
    PRIMARY KEY (rtype, id, version)
) STRICT;
CREATE INDEX resource_versions_patient ON resource_versions (patient_id, seq);

-- Per-patient change feed (append-only).
CREATE TABLE changes (
    patient_id TEXT    NOT NULL REFERENCES patients(id),
    seq        INTEGER NOT NULL,
    rtype      TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    time_us    INTEGER NOT NULL,
    PRIMARY KEY (patient_id, seq)
) STRICT;

-- Hash-chained access log (append-only); patient_id is not a foreign key:
-- denied attempts may name patients that do not exist.
CREATE TABLE access_log (
    seq        INTEGER PRIMARY KEY,
    time_us    INTEGER NOT NULL,
    actor_kind INTEGER NOT NULL,
    actor_id   TEXT    NOT NULL,
    purpose    INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    patient_id TEXT    NOT NULL,
    resources  TEXT    NOT NULL,  -- JSON array of strings
    outcome    INTEGER NOT NULL,
    detail     TEXT    NOT NULL,
    prev       BLOB    NOT NULL,
    hash       BLOB    NOT NULL
) STRICT;
CREATE INDEX access_log_patient ON access_log (patient_id, seq);

CREATE TABLE log_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    next INTEGER NOT NULL,  -- number of entries: the seq of the next one
    hash BLOB    NOT NULL
) STRICT;
INSERT INTO log_head (id, next, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE anchors (
    batch      INTEGER PRIMARY KEY,  -- the batch number on chain: 0, 1, … without gaps
    time_us    INTEGER NOT NULL,
    log_from   INTEGER NOT NULL UNIQUE,
    log_count  INTEGER NOT NULL,
    log_root   BLOB    NOT NULL,
    state_root BLOB    NOT NULL,
    tx         TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE anchor_states (
    batch      INTEGER NOT NULL REFERENCES anchors(batch),
    tag        BLOB    NOT NULL,
    patient_id TEXT    NOT NULL REFERENCES patients(id),
    seq        INTEGER NOT NULL,
    hash       BLOB    NOT NULL,
    PRIMARY KEY (batch, tag)
) STRICT;

-- Append-only tables refuse edits and deletions.
-- +goose StatementBegin
CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER resource_versions_no_update BEFORE UPDATE ON resource_versions
BEGIN SELECT RAISE(ABORT, 'resource_versions is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER resource_versions_no_delete BEFORE DELETE ON resource_versions
BEGIN SELECT RAISE(ABORT, 'resource_versions is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes
BEGIN SELECT RAISE(ABORT, 'changes is append-only'); END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes
BEGIN SELECT RAISE(ABORT, 'changes is append-only'); END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE anchor_states;
DROP TABLE anchors;
DROP TABLE log_head;
DROP TABLE access_log;
DROP TABLE changes;
DROP TABLE resource_versions;
DROP TABLE resources;
DROP TABLE patients;
