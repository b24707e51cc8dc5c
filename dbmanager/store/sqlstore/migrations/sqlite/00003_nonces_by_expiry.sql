-- Used nonces keyed by (expiry, nonce) instead of nonce alone. A signed
-- request's expiry is part of what is signed, so a replay carries the same
-- pair and is refused as before. But new rows now land at the end of the key
-- order (expiries grow with the clock) instead of at random places: a group
-- commit of many requests writes a few pages of this table, not one page per
-- request. Pruning deletes from the start of the same order; the separate
-- expiry index is no longer needed.

-- +goose Up
CREATE TABLE used_nonces_by_expiry (
    expires_us INTEGER NOT NULL,
    nonce      BLOB    NOT NULL CHECK (length(nonce) = 32),
    PRIMARY KEY (expires_us, nonce)
) STRICT, WITHOUT ROWID;
INSERT INTO used_nonces_by_expiry (expires_us, nonce) SELECT expires_us, nonce FROM used_nonces;
DROP TABLE used_nonces;
ALTER TABLE used_nonces_by_expiry RENAME TO used_nonces;

-- +goose Down
CREATE TABLE used_nonces_by_nonce (
    nonce      BLOB    PRIMARY KEY CHECK (length(nonce) = 32),
    expires_us INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO used_nonces_by_nonce (nonce, expires_us) SELECT nonce, max(expires_us) FROM used_nonces GROUP BY nonce;
DROP TABLE used_nonces;
ALTER TABLE used_nonces_by_nonce RENAME TO used_nonces;
CREATE INDEX used_nonces_expires ON used_nonces (expires_us);
