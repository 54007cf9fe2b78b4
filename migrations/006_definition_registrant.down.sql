ALTER TABLE saga_definitions DROP COLUMN registered_by;
