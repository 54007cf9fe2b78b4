DROP TABLE outbox;
DROP TABLE sagas;
DROP TABLE saga_definitions;
