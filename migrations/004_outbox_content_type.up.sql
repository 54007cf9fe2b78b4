-- The outbox keeps each message's content type, so that a row republished by the poller after a
-- crash goes out exactly as it would have right after its commit.
ALTER TABLE outbox ADD COLUMN content_type text NOT NULL DEFAULT 'application/json';
-- Registering an older version's content again makes it the latest (a new version), so the hash is
-- no longer unique per name; it is still looked up by name and hash.
ALTER TABLE saga_definitions DROP CONSTRAINT saga_definitions_name_hash_key;
CREATE INDEX saga_definitions_name_hash ON saga_definitions (name, hash);
