-- Claim codes bound to the tag that may use them: staff record the desk code
-- the patient's app shows for this provider (package tagcode) when they issue
-- a claim code, and the gateway opens the relationship for that tag only.
-- Codes issued before this migration have no binding (NULL): the gateway
-- refuses them, and staff issue new ones.

-- +goose Up
ALTER TABLE claim_codes ADD COLUMN tag_code TEXT CHECK (tag_code IS NULL OR length(tag_code) = 23);

-- +goose Down
ALTER TABLE claim_codes DROP COLUMN tag_code;
