-- Who registered each definition version: the caller's identity (docs/api.md#roles), or
-- "anonymous" on a coordinator without authentication. Versions registered before are left empty.
ALTER TABLE saga_definitions ADD COLUMN registered_by text NOT NULL DEFAULT '';
