-- What the gateway must not forget on a restart besides the records: the
-- nonces of accepted signed requests and the staff-issued claim codes.

-- +goose Up
-- Nonces of accepted signed requests, each kept until its request expires
-- (and then pruned), so a replay fails even after a restart.
CREATE TABLE used_nonces (
    nonce      BYTEA  PRIMARY KEY CHECK (length(nonce) = 32),
    expires_us BIGINT NOT NULL
);
CREATE INDEX used_nonces_expires ON used_nonces (expires_us);

-- One-time claim codes: the SHA-256 of the code, never the code itself.
-- A row is deleted once its claim succeeded, or pruned once expired.
CREATE TABLE claim_codes (
    code_hash  BYTEA  PRIMARY KEY CHECK (length(code_hash) = 32),
    patient_id TEXT COLLATE "C" NOT NULL REFERENCES patients(id),
    expires_us BIGINT NOT NULL
);
CREATE INDEX claim_codes_expires ON claim_codes (expires_us);

-- +goose Down
DROP TABLE claim_codes;
DROP TABLE used_nonces;
