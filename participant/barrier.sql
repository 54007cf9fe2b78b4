-- The barrier's SQL: the Go SDK runs these statements (barrier_sql.go loads this file), and
-- docs/protocol.md §8 and docs/twopc.md §8 show them to workers in other languages; a test checks
-- that the docs quote them as they are here. The tables are in schema sagacoord_participant, which
-- the SDK replaces with Config.Schema.
--
-- A statement on a barrier row takes the row's key as $1 gid (the saga id, or the transaction id),
-- $2 step (the step name, or the participant name) and $3 kind (action, compensate, prepare,
-- commit or abort).

-- name: create-barrier
CREATE TABLE IF NOT EXISTS sagacoord_participant.barrier (
    gid        text        NOT NULL,
    step       text        NOT NULL,
    kind       text        NOT NULL,
    reply      jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempt    integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (gid, step, kind)
);

-- Tables made before the attempt column existed get it here. Their rows get the largest attempt,
-- which no command carries, so that a redelivery cannot reopen a business failure decided before
-- the upgrade (the coordinator may have taken it as final already).
-- name: add-attempt
ALTER TABLE sagacoord_participant.barrier ADD COLUMN IF NOT EXISTS attempt integer NOT NULL DEFAULT 2147483647;
ALTER TABLE sagacoord_participant.barrier ALTER COLUMN attempt SET DEFAULT 0;

-- The transactions that voted YES and await their decision: a row lives from the YES to the
-- COMMIT or ABORT, written in the same local transactions.
-- name: create-prepared
CREATE TABLE IF NOT EXISTS sagacoord_participant.prepared (
    tx_id         text        NOT NULL,
    participant   text        NOT NULL,
    payload       jsonb,
    prepared_at   timestamptz NOT NULL DEFAULT now(),
    last_query_at timestamptz,
    PRIMARY KEY (tx_id, participant)
);

-- The sagas and transactions that the coordinator said are final (final notices): no command of
-- theirs is ever needed again. A final gid claims no row, so that a late copy of one of its
-- commands is acknowledged without effect, even once its rows are deleted. swept_at says when
-- its barrier rows were deleted.
-- name: create-finals
CREATE TABLE IF NOT EXISTS sagacoord_participant.finals (
    gid       text        PRIMARY KEY,
    noted_at  timestamptz NOT NULL DEFAULT now(),
    swept_at  timestamptz
);
CREATE INDEX IF NOT EXISTS finals_noted_at ON sagacoord_participant.finals (noted_at);

-- Claims a row, with $4 its first reply ('{}' while undecided, or a refusal) and $5 the
-- command's attempt, unless the gid is final. On a key that another transaction has just
-- inserted and not yet committed, it waits for that transaction to end.
-- name: claim
INSERT INTO sagacoord_participant.barrier (gid, step, kind, reply, attempt)
SELECT $1::text, $2::text, $3::text, $4::jsonb, $5::integer
 WHERE NOT EXISTS (SELECT 1 FROM sagacoord_participant.finals WHERE gid = $1::text)
    ON CONFLICT DO NOTHING;

-- Reopens a business failure for a later attempt $4, unless the gid is final; $5 is the refusal
-- that an early compensation planted, which is never reopened.
-- name: reopen
UPDATE sagacoord_participant.barrier SET reply = '{}', attempt = $4
 WHERE gid = $1 AND step = $2 AND kind = $3
   AND attempt < $4 AND reply->>'outcome' = 'failed' AND coalesce(reply->>'error', '') <> $5
   AND NOT EXISTS (SELECT 1 FROM sagacoord_participant.finals WHERE gid = $1);

-- Reads the reply a row holds, or {"outcome":"final"} when the gid is final; no row when neither.
-- name: read
SELECT reply FROM (
    SELECT 0 AS o, '{"outcome":"final"}' AS reply FROM sagacoord_participant.finals WHERE gid = $1
    UNION ALL
    SELECT 1, reply::text FROM sagacoord_participant.barrier WHERE gid = $1 AND step = $2 AND kind = $3
) r ORDER BY o LIMIT 1;

-- name: read-locked
SELECT reply::text FROM sagacoord_participant.barrier WHERE gid = $1 AND step = $2 AND kind = $3 FOR UPDATE;

-- Stores the decided reply $4 and gives it back as the database holds it, so that the first reply
-- and every re-sent copy are the same.
-- name: store
UPDATE sagacoord_participant.barrier SET reply = $4 WHERE gid = $1 AND step = $2 AND kind = $3 RETURNING reply::text;

-- $1 transaction id, $2 participant name, $3 the PREPARE's payload (or NULL).
-- name: record-prepared
INSERT INTO sagacoord_participant.prepared (tx_id, participant, payload) VALUES ($1, $2, $3::jsonb);

-- Forgets a prepared transaction and gives back its payload; no row when there was none.
-- name: forget-prepared
DELETE FROM sagacoord_participant.prepared WHERE tx_id = $1 AND participant = $2 RETURNING coalesce(payload::text, '');

-- Claims the prepared transactions to ask the coordinator about and stamps them, so that competing
-- processes of one participant do not ask twice. $1 is the participant; $2 (the database time when
-- the worker started, or NULL) asks about every row prepared and not asked before then; otherwise
-- a row is due after $3 microseconds of silence since its prepare and since its last question. $4
-- bounds the rows.
-- name: claim-queries
WITH due AS (
    SELECT tx_id FROM sagacoord_participant.prepared
    WHERE participant = $1
      AND (($2::timestamptz IS NOT NULL AND prepared_at < $2::timestamptz AND (last_query_at IS NULL OR last_query_at < $2::timestamptz))
        OR (prepared_at <= now() - $3::bigint * interval '1 microsecond'
          AND (last_query_at IS NULL OR last_query_at <= now() - $3::bigint * interval '1 microsecond')))
    ORDER BY prepared_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE sagacoord_participant.prepared AS p SET last_query_at = now() FROM due
WHERE p.participant = $1 AND p.tx_id = due.tx_id
RETURNING p.tx_id, p.last_query_at;

-- Records a final notice: $1 is the array of its saga and transaction ids.
-- name: note-finals
INSERT INTO sagacoord_participant.finals (gid) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING;

-- Deletes the barrier rows of at most $2 final gids noted more than $1 microseconds ago, and
-- marks them swept. Competing processes of one participant skip each other's gids.
-- name: sweep-barrier
WITH due AS (
    SELECT gid FROM sagacoord_participant.finals
    WHERE swept_at IS NULL AND noted_at <= now() - $1::bigint * interval '1 microsecond'
    ORDER BY noted_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM sagacoord_participant.barrier AS b USING due WHERE b.gid = due.gid
)
UPDATE sagacoord_participant.finals AS f SET swept_at = now() FROM due WHERE f.gid = due.gid;

-- Forgets at most $2 final gids noted more than $1 microseconds ago (the horizon); a command of
-- theirs arriving later would be taken as new.
-- name: forget-finals
DELETE FROM sagacoord_participant.finals WHERE gid IN (
    SELECT gid FROM sagacoord_participant.finals
    WHERE swept_at IS NOT NULL AND noted_at <= now() - $1::bigint * interval '1 microsecond'
    ORDER BY noted_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED);
