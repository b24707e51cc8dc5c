-- Staff accounts of the provider's desk: a role (clerk or admin), a
-- password for the desk's web page (argon2id, encoded with its parameters)
-- and an API token for the command line (its SHA-256 only), and the
-- sessions a password login opens (their token's SHA-256, until they
-- expire). Tokens in the gateway's configuration (StaffTokens) stay the
-- provider's admin tokens.

-- +goose Up
CREATE TABLE staff (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('clerk', 'admin')),
    password_hash TEXT    NOT NULL DEFAULT '',
    token_hash    BYTEA   UNIQUE CHECK (token_hash IS NULL OR length(token_hash) = 32),
    created_us    BIGINT  NOT NULL,
    disabled      SMALLINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

CREATE TABLE staff_sessions (
    token_hash BYTEA  PRIMARY KEY CHECK (length(token_hash) = 32),
    staff_id   TEXT COLLATE "C" NOT NULL REFERENCES staff(id),
    expires_us BIGINT NOT NULL
);
CREATE INDEX staff_sessions_expires ON staff_sessions (expires_us);

-- +goose Down
DROP TABLE staff_sessions;
DROP TABLE staff;
