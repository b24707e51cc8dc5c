-- Patients' sealed locator notes (store.Locators): where a patient's leaf
-- is in the registry's tree, sealed so only the patient can read it, filed
-- under a tag only the patient can compute. The latest note per tag.

-- +goose Up
CREATE TABLE locators (
    tag  BYTEA PRIMARY KEY CHECK (length(tag) = 32),
    note BYTEA NOT NULL CHECK (length(note) = 36)
);

-- +goose Down
DROP TABLE locators;
