-- Two-phase-commit transactions: one row each, participants and history in state (jsonb), like
-- sagas. A row in PREPARING has no decision; the decision is logged by the update that moves it
-- to COMMITTING or ABORTING, in the same transaction as the outbox rows that carry it.
CREATE TABLE transactions (
    id            uuid        PRIMARY KEY,
    status        text        NOT NULL,
    request_hash  text        NOT NULL,
    state         jsonb       NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    wake_at       timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX transactions_wake_at ON transactions (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX transactions_status_created ON transactions (status, created_at DESC, id DESC);
CREATE INDEX transactions_created ON transactions (created_at DESC, id DESC);
