-- Records database of one provider gateway (PostgreSQL). Times are Unix
-- microseconds (UTC); hashes and tags are 32-byte bytea; raw JSON is stored
-- byte for byte as received (bytea, not jsonb, which would re-serialise it).
-- Text keys use the "C" collation so ordering is bytewise, as in SQLite.

-- +goose Up
CREATE TABLE patients (
    id           TEXT COLLATE "C" PRIMARY KEY,
    tag          BYTEA  UNIQUE CHECK (tag IS NULL OR length(tag) = 32),
    created_us   BIGINT NOT NULL,
    seq          BIGINT NOT NULL DEFAULT 0,
    anchored_seq BIGINT NOT NULL DEFAULT -1
);

-- Current version of every resource (its JSON is in resource_versions).
CREATE TABLE resources (
    rtype           TEXT COLLATE "C" NOT NULL,
    id              TEXT COLLATE "C" NOT NULL,
    version         BIGINT NOT NULL CHECK (version >= 1),
    patient_id      TEXT COLLATE "C" REFERENCES patients(id),
    last_updated_us BIGINT NOT NULL,
    sha256          BYTEA  NOT NULL CHECK (length(sha256) = 32),
    seq             BIGINT NOT NULL,
    PRIMARY KEY (rtype, id)
);
CREATE INDEX resources_patient ON resources (patient_id, rtype, id);

CREATE TABLE resource_versions (
    rtype           TEXT COLLATE "C" NOT NULL,
    id              TEXT COLLATE "C" NOT NULL,
    version         BIGINT NOT NULL,
    patient_id      TEXT COLLATE "C" REFERENCES patients(id),
    last_updated_us BIGINT NOT NULL,
    sha256          BYTEA  NOT NULL,
    seq             BIGINT NOT NULL,
    raw             BYTEA  NOT NULL,
    PRIMARY KEY (rtype, id, version)
);
CREATE INDEX resource_versions_patient ON resource_versions (patient_id, seq);

CREATE TABLE changes (
    patient_id TEXT COLLATE "C" NOT NULL REFERENCES patients(id),
    seq        BIGINT NOT NULL,
    rtype      TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    time_us    BIGINT NOT NULL,
    PRIMARY KEY (patient_id, seq)
);

CREATE TABLE access_log (
    seq        BIGINT PRIMARY KEY,
    time_us    BIGINT   NOT NULL,
    actor_kind SMALLINT NOT NULL,
    actor_id   TEXT     NOT NULL,
    purpose    SMALLINT NOT NULL,
    action     TEXT     NOT NULL,
    patient_id TEXT COLLATE "C" NOT NULL,
    resources  TEXT     NOT NULL,
    outcome    SMALLINT NOT NULL,
    detail     TEXT     NOT NULL,
    prev       BYTEA    NOT NULL,
    hash       BYTEA    NOT NULL
);
CREATE INDEX access_log_patient ON access_log (patient_id, seq);

CREATE TABLE log_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    next BIGINT NOT NULL,  -- number of entries: the seq of the next one
    hash BYTEA  NOT NULL
);
INSERT INTO log_head (id, next, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE anchors (
    batch      BIGINT  PRIMARY KEY,  -- the batch number on chain: 0, 1, … without gaps
    time_us    BIGINT NOT NULL,
    log_from   BIGINT NOT NULL UNIQUE,
    log_count  BIGINT NOT NULL,
    log_root   BYTEA  NOT NULL,
    state_root BYTEA  NOT NULL,
    tx         TEXT   NOT NULL DEFAULT ''
);

CREATE TABLE anchor_states (
    batch      BIGINT NOT NULL REFERENCES anchors(batch),
    tag        BYTEA  NOT NULL,
    patient_id TEXT COLLATE "C" NOT NULL REFERENCES patients(id),
    seq        BIGINT NOT NULL,
    hash       BYTEA  NOT NULL,
    PRIMARY KEY (batch, tag)
);

-- +goose StatementBegin
CREATE FUNCTION medrec_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION medrec_append_only();
CREATE TRIGGER resource_versions_append_only BEFORE UPDATE OR DELETE ON resource_versions
    FOR EACH ROW EXECUTE FUNCTION medrec_append_only();
CREATE TRIGGER changes_append_only BEFORE UPDATE OR DELETE ON changes
    FOR EACH ROW EXECUTE FUNCTION medrec_append_only();

-- +goose Down
DROP TABLE anchor_states;
DROP TABLE anchors;
DROP TABLE log_head;
DROP TABLE access_log;
DROP TABLE changes;
DROP TABLE resource_versions;
DROP TABLE resources;
DROP TABLE patients;
DROP FUNCTION medrec_append_only();
