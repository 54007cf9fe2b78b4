-- Saga definitions: immutable content per (name, version); identical content is found by hash.
CREATE TABLE saga_definitions (
    name        text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    hash        text        NOT NULL,
    content     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version),
    UNIQUE (name, hash)
);

-- One row per saga. The steps and the recorded history live in state (jsonb) so that a transition
-- is one row update; the columns are what lists, timers and retention select on.
CREATE TABLE sagas (
    id                  uuid        PRIMARY KEY,
    definition_name     text        NOT NULL,
    definition_version  integer     NOT NULL,
    status              text        NOT NULL,
    input               bytea       NOT NULL,
    request_hash        text        NOT NULL,
    state               jsonb       NOT NULL,
    version             bigint      NOT NULL DEFAULT 1,
    wake_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    FOREIGN KEY (definition_name, definition_version) REFERENCES saga_definitions (name, version)
);
CREATE INDEX sagas_wake_at ON sagas (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX sagas_status_created ON sagas (status, created_at DESC, id DESC);
CREATE INDEX sagas_definition_created ON sagas (definition_name, created_at DESC, id DESC);
CREATE INDEX sagas_created ON sagas (created_at DESC, id DESC);

-- Transactional outbox: messages committed with the state change that caused them. A row is
-- leased to the instance that inserted it (it publishes right after commit); when the lease
-- lapses any instance's relay claims it. Rows are deleted once the broker confirmed them.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    exchange        text        NOT NULL,
    routing_key     text        NOT NULL,
    message_id      text        NOT NULL,
    type            text        NOT NULL,
    correlation_id  text        NOT NULL DEFAULT '',
    headers         jsonb       NOT NULL,
    body            bytea       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    lease_until     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_lease_until ON outbox (lease_until);
