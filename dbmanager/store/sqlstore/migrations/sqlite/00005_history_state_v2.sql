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
-- without log entries is followed by one starting at the same seq. SQLite
-- cannot drop a column constraint, so anchors is rebuilt — and with it
-- anchor_states, whose foreign key names it (renaming a table rewrites the
-- references to it, so the child is rebuilt pointing at the new parent).

-- +goose Up
CREATE TABLE anchors_v5 (
    batch      INTEGER PRIMARY KEY,  -- the batch number on chain: 0, 1, … without gaps
    time_us    INTEGER NOT NULL,
    log_from   INTEGER NOT NULL,
    log_count  INTEGER NOT NULL,
    log_root   BLOB    NOT NULL,
    state_root BLOB    NOT NULL,
    tx         TEXT    NOT NULL DEFAULT ''
) STRICT;
INSERT INTO anchors_v5 (batch, time_us, log_from, log_count, log_root, state_root, tx)
    SELECT batch, time_us, log_from, log_count, log_root, state_root, tx FROM anchors;

CREATE TABLE anchor_states_v5 (
    batch        INTEGER NOT NULL REFERENCES anchors_v5(batch),
    tag          BLOB    NOT NULL,
    patient_id   TEXT    NOT NULL REFERENCES patients(id),
    seq          INTEGER NOT NULL,  -- the history's size: changes 1…seq
    hash         BLOB    NOT NULL,  -- the leaf: state v2 (v1 where history_root is NULL)
    history_root BLOB,
    log_through  INTEGER,
    log_count    INTEGER,
    log_head     BLOB,
    PRIMARY KEY (batch, tag)
) STRICT;
INSERT INTO anchor_states_v5 (batch, tag, patient_id, seq, hash)
    SELECT batch, tag, patient_id, seq, hash FROM anchor_states;

DROP TABLE anchor_states;
DROP TABLE anchors;
ALTER TABLE anchors_v5 RENAME TO anchors;
ALTER TABLE anchor_states_v5 RENAME TO anchor_states;
-- A patient's newest leaf, for the gateway's state tree at start.
CREATE INDEX anchor_states_tag ON anchor_states (tag, batch);

ALTER TABLE patients ADD COLUMN history_root BLOB;  -- root of the history anchored_seq covers (NULL: recompute)
ALTER TABLE patients ADD COLUMN log_through INTEGER NOT NULL DEFAULT 0;
ALTER TABLE patients ADD COLUMN log_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE patients ADD COLUMN log_head BLOB NOT NULL DEFAULT X'0000000000000000000000000000000000000000000000000000000000000000';
UPDATE patients SET anchored_seq = -1;

-- +goose Down
DROP INDEX anchor_states_tag;
-- UNIQUE (log_from) is not restored: it was wrong at every version.
ALTER TABLE anchor_states DROP COLUMN log_head;
ALTER TABLE anchor_states DROP COLUMN log_count;
ALTER TABLE anchor_states DROP COLUMN log_through;
ALTER TABLE anchor_states DROP COLUMN history_root;
ALTER TABLE patients DROP COLUMN log_head;
ALTER TABLE patients DROP COLUMN log_count;
ALTER TABLE patients DROP COLUMN log_through;
ALTER TABLE patients DROP COLUMN history_root;
UPDATE patients SET anchored_seq = -1;
