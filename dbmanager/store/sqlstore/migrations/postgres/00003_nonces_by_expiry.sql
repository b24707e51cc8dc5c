-- Used nonces keyed by (expiry, nonce) instead of nonce alone. A signed
-- request's expiry is part of what is signed, so a replay carries the same
-- pair and is refused as before. But new rows now land at the end of the key
-- order (expiries grow with the clock) instead of at random places: a group
-- commit of many requests writes a few index pages, not one page per
-- request. Pruning deletes from the start of the same order; the separate
-- expiry index is no longer needed.

-- +goose Up
ALTER TABLE used_nonces DROP CONSTRAINT used_nonces_pkey;
DROP INDEX used_nonces_expires;
ALTER TABLE used_nonces ADD PRIMARY KEY (expires_us, nonce);

-- +goose Down
DELETE FROM used_nonces a USING used_nonces b WHERE a.nonce = b.nonce AND a.expires_us < b.expires_us;
ALTER TABLE used_nonces DROP CONSTRAINT used_nonces_pkey;
ALTER TABLE used_nonces ADD PRIMARY KEY (nonce);
CREATE INDEX used_nonces_expires ON used_nonces (expires_us);
