-- Search: the searchable values of each resource's current version (what
-- package fhirsearch extracts), written in the transaction that writes the
-- version, and replaced when a new version becomes current.
--
-- search_values holds one row per value: a token (system, value = code), a
-- reference (system = the target's type or '', value = its id) or a date
-- (value = ''; lo, hi: the instants covered, Unix microseconds; year_lo,
-- year_hi: the years as written, what research readers compare with; all
-- four 0 for tokens and references). patient_id is the resource's patient
-- (NULL: shared), which never changes: searches look up one patient's
-- values by it.
--
-- search_index records the version of the extraction that filled the
-- table. This migration creates it empty at version 0: the store indexes
-- every resource when it next opens (and again whenever the extraction
-- changes), so existing data becomes searchable without a migration in Go.

-- +goose Up
-- Keyed by resource (replacing its values, _include, sort keys); each
-- of the two indexes holds one kind of value only and covers its queries,
-- so a value costs two b-tree inserts and no search reads the table.
CREATE TABLE search_values (
    rtype      TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    param      TEXT    NOT NULL,
    n          INTEGER NOT NULL,  -- the value's place among the resource's
    system     TEXT    NOT NULL DEFAULT '',
    value      TEXT    NOT NULL DEFAULT '',
    lo         INTEGER NOT NULL DEFAULT 0,
    hi         INTEGER NOT NULL DEFAULT 0,
    year_lo    INTEGER NOT NULL DEFAULT 0,
    year_hi    INTEGER NOT NULL DEFAULT 0,
    patient_id TEXT,
    PRIMARY KEY (rtype, id, param, n)
) STRICT, WITHOUT ROWID;
CREATE INDEX search_values_tokens ON search_values (patient_id, rtype, param, value, system, id) WHERE value <> '';
CREATE INDEX search_values_dates ON search_values (patient_id, rtype, param, lo, hi, year_lo, year_hi, id) WHERE value = '';

CREATE TABLE search_index (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL  -- fhirsearch.Version of the values (0: none yet)
) STRICT;
INSERT INTO search_index (id, version) VALUES (1, 0);

-- +goose Down
DROP TABLE search_index;
DROP TABLE search_values;
