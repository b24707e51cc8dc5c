-- Records state v2: each patient's anchored leaf commits to the patient's
-- records history (an RFC 6962 tree over every version, in change order:
-- its size and root) and to a commitment over the patient's access-log
-- entries (a hash chain: through which log seq, how many, its head).
--
-- patients gains the log commitment its last anchor covered, which the
-- next anchor extends, and the root of the history it covered, which a
-- leaf that changes only for new log entries keeps. anchor_states gains the leaf's parts; a row anchored
-- before this migration keeps NULLs there (its hash is a v1 record-set
-- hash). Every tagged patient is marked for re-anchoring, so the next batch
-- anchors a v2 leaf for each.
--
-- anchors loses UNIQUE (log_from): like the Anchors contract, a batch
-- without log entries is followed by one starting at the same seq.

-- +goose Up
ALTER TABLE anchors DROP CONSTRAINT IF EXISTS anchors_log_from_key;
ALTER TABLE anchor_states
    ADD COLUMN history_root BYTEA,
    ADD COLUMN log_through  BIGINT,
    ADD COLUMN log_count    BIGINT,
    ADD COLUMN log_head     BYTEA;
-- A patient's newest leaf, for the gateway's state tree at start.
CREATE INDEX anchor_states_tag ON anchor_states (tag, batch);
ALTER TABLE patients
    ADD COLUMN history_root BYTEA,  -- root of the history anchored_seq covers (NULL: recompute)
    ADD COLUMN log_through BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN log_count   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN log_head    BYTEA  NOT NULL DEFAULT decode(repeat('00', 32), 'hex');
UPDATE patients SET anchored_seq = -1;

-- +goose Down
DROP INDEX anchor_states_tag;
ALTER TABLE patients DROP COLUMN log_head, DROP COLUMN log_count, DROP COLUMN log_through, DROP COLUMN history_root;
ALTER TABLE anchor_states DROP COLUMN log_head, DROP COLUMN log_count, DROP COLUMN log_through, DROP COLUMN history_root;
-- UNIQUE (log_from) is not restored: it was wrong at every version.
UPDATE patients SET anchored_seq = -1;
