-- The patient registry's Merkle tree, as the gateway's chain view follows
-- it (merkle.Nodes): every filled node by height (0: the commitments) and
-- index, and the number of leaves. Kept here so that a nation's tree (2^30
-- leaves) is on disk, not in the gateway's memory.

-- +goose Up
CREATE TABLE registry_nodes (
    height SMALLINT NOT NULL CHECK (height BETWEEN 0 AND 30),
    idx    BIGINT   NOT NULL CHECK (idx >= 0),
    value  BYTEA    NOT NULL CHECK (length(value) = 32),
    PRIMARY KEY (height, idx)
);
CREATE INDEX registry_leaves ON registry_nodes (value) WHERE height = 0;

CREATE TABLE registry_size (
    id     SMALLINT PRIMARY KEY CHECK (id = 1),
    leaves BIGINT   NOT NULL CHECK (leaves >= 0)
);
INSERT INTO registry_size (id, leaves) VALUES (1, 0);

-- +goose Down
DROP TABLE registry_size;
DROP TABLE registry_nodes;
