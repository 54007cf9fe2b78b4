DROP INDEX transactions_finished_at;
DROP INDEX sagas_finished_at;
