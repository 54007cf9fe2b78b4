DROP INDEX saga_definitions_name_hash;
ALTER TABLE saga_definitions ADD CONSTRAINT saga_definitions_name_hash_key UNIQUE (name, hash);
ALTER TABLE outbox DROP COLUMN content_type;
