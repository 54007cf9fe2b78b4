-- Retention deletes finished sagas and transactions in batches, oldest first.
CREATE INDEX sagas_finished_at ON sagas (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX transactions_finished_at ON transactions (finished_at) WHERE finished_at IS NOT NULL;
