#!/usr/bin/python3
"""A sagacoord participant in Python, written from docs/protocol.md (sections 3 to 10) and
docs/twopc.md (section 8), with pika and psycopg2. It implements the test contract of
docs/conformance.md, so that `sagalab participant-check` can check it.

Usage: worker.py NAME AMQP_URL DATABASE_URL SCHEMA

One thread: it consumes with manual acks on one connection, and publishes replies with confirms
and the mandatory flag on a second one (protocol.md section 2). Each command is decided in one
local transaction at READ COMMITTED through the barrier (protocol.md section 8), and acknowledged
only after the commit and the broker's confirm of the reply.
"""

import json
import sys
import time

import pika
import psycopg2
import psycopg2.extensions

NAME, AMQP_URL, DATABASE_URL, SCHEMA = sys.argv[1:5]
QUEUE = "sagacoord.participant." + NAME
TXQUEUE = QUEUE + ":twopc"
ARGS = {"x-dead-letter-exchange": "sagacoord.dead"}
MAX_BODY = 16 << 20
REFUSAL = {"outcome": "failed", "error": "compensated before action"}
TX_REFUSAL = {"outcome": "vote_no", "error": "aborted before prepare"}
COPIED = ("x-sagacoord-version", "x-saga-id", "x-tx-id", "x-step", "x-step-index", "x-attempt",
          "x-kind", "x-participant", "traceparent", "tracestate")
DEFAULT_SILENCE = 10.0  # seconds; the coordinator's default prepare timeout

S = SCHEMA  # a plain identifier, checked below
SQL = {
    "claim": f"""INSERT INTO {S}.barrier (gid, step, kind, reply, attempt)
SELECT %s::text, %s::text, %s::text, %s::jsonb, %s::integer
 WHERE NOT EXISTS (SELECT 1 FROM {S}.finals WHERE gid = %s::text)
    ON CONFLICT DO NOTHING""",
    "reopen": f"""UPDATE {S}.barrier SET reply = '{{}}', attempt = %s
 WHERE gid = %s AND step = %s AND kind = %s
   AND attempt < %s AND reply->>'outcome' = 'failed' AND coalesce(reply->>'error', '') <> %s
   AND NOT EXISTS (SELECT 1 FROM {S}.finals WHERE gid = %s)""",
    "read": f"""SELECT reply FROM (
    SELECT 0 AS o, '{{"outcome":"final"}}' AS reply FROM {S}.finals WHERE gid = %s
    UNION ALL
    SELECT 1, reply::text FROM {S}.barrier WHERE gid = %s AND step = %s AND kind = %s
) r ORDER BY o LIMIT 1""",
    "read-locked": f"SELECT reply::text FROM {S}.barrier WHERE gid = %s AND step = %s AND kind = %s FOR UPDATE",
    "store": f"UPDATE {S}.barrier SET reply = %s WHERE gid = %s AND step = %s AND kind = %s RETURNING reply::text",
}


class Malformed(Exception):
    """No retry can fix the message: dead-letter it."""


class Business(Exception):
    """A business failure: reply failed (or vote no)."""


class Transient(Exception):
    """Try again later: reply retry, store nothing."""


class Final(Exception):
    """The saga or transaction is final: acknowledge, reply nothing."""


def migrate(db):
    with db, db.cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {S}")
        cur.execute(f"""CREATE TABLE IF NOT EXISTS {S}.barrier (
    gid text NOT NULL, step text NOT NULL, kind text NOT NULL, reply jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), attempt integer NOT NULL DEFAULT 0,
    PRIMARY KEY (gid, step, kind))""")
        cur.execute(f"""CREATE TABLE IF NOT EXISTS {S}.finals (
    gid text PRIMARY KEY, noted_at timestamptz NOT NULL DEFAULT now(), swept_at timestamptz)""")
        cur.execute(f"""CREATE TABLE IF NOT EXISTS {S}.prepared (
    tx_id text NOT NULL, participant text NOT NULL, payload jsonb,
    prepared_at timestamptz NOT NULL DEFAULT now(), last_query_at timestamptz,
    PRIMARY KEY (tx_id, participant))""")
        cur.execute(f"""CREATE TABLE IF NOT EXISTS {S}.conformance_effects (
    gid text NOT NULL, step text NOT NULL, applied integer NOT NULL, PRIMARY KEY (gid, step))""")


# --- the barrier's statements -------------------------------------------------------------------

def claim(cur, gid, step, kind, reply, attempt):
    cur.execute(SQL["claim"], (gid, step, kind, json.dumps(reply), attempt, gid))
    return cur.rowcount == 1


def reopen(cur, gid, step, kind, attempt):
    cur.execute(SQL["reopen"], (attempt, gid, step, kind, attempt, REFUSAL["error"], gid))
    return cur.rowcount == 1


def read(cur, gid, step, kind):
    cur.execute(SQL["read"], (gid, gid, step, kind))
    row = cur.fetchone()
    if row is None:
        return None
    text = row[0]
    if json.loads(text).get("outcome") == "final":
        raise Final()
    return text


def read_locked(cur, gid, step, kind):
    cur.execute(SQL["read-locked"], (gid, step, kind))
    row = cur.fetchone()
    return json.loads(row[0]) if row else None


def store(cur, gid, step, kind, reply):
    cur.execute(SQL["store"], (json.dumps(reply), gid, step, kind))
    return cur.fetchone()[0]


# --- the test contract (docs/conformance.md) ------------------------------------------------------

retried = set()  # in memory on purpose: a retry stores nothing


def count_effect(cur, cmd):
    cur.execute(f"""INSERT INTO {S}.conformance_effects AS e (gid, step, applied) VALUES (%s, %s, 1)
ON CONFLICT (gid, step) DO UPDATE SET applied = e.applied + 1 RETURNING applied""",
                (cmd["saga_id"], cmd["step"]))
    return cur.fetchone()[0]


def run_action(cur, cmd):
    action = cmd["action"]
    if action == "check.fail":
        raise Business("check.fail always fails")
    n = count_effect(cur, cmd)
    if action == "check.fail-first" and cmd["attempt"] == 1:
        raise Business("check.fail-first fails its first attempt")
    if action == "check.retry-once" and (cmd["saga_id"], cmd["step"]) not in retried:
        retried.add((cmd["saga_id"], cmd["step"]))
        raise Transient("check.retry-once asks for a retry on its first delivery")
    if action == "check.echo":
        return {"input": cmd.get("input"), "applied": n}
    return {"applied": n}


def run_compensation(cur, cmd, output):
    return {"undone": True}


ACTIONS = {"check.ok", "check.echo", "check.fail", "check.fail-first", "check.retry-once"}
COMPENSATIONS = {"check.undo"}


# --- checking a command (protocol.md section 5, twopc.md section 7) -------------------------------

def is_name(v):
    return (isinstance(v, str) and 0 < len(v) <= 128 and v[0].isascii() and v[0].isalnum()
            and all(c.isascii() and (c.isalnum() or c in "._-") for c in v))


def parse(props, body, types):
    if props.type not in types:
        raise Malformed(f"type {props.type!r}")
    if len(body) > MAX_BODY:
        raise Malformed("body too large")
    version = (props.headers or {}).get("x-sagacoord-version")
    if version is not None and str(version) != "1":
        raise Malformed("protocol version")
    try:
        cmd = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Malformed(str(e))
    if not isinstance(cmd, dict):
        raise Malformed("not an object")
    return cmd


def check_step(props, body):
    cmd = parse(props, body, ("saga.action", "saga.compensate"))
    kind = cmd.get("kind")
    if not cmd.get("saga_id") or kind not in ("action", "compensate"):
        raise Malformed("saga_id or kind")
    if not isinstance(cmd.get("attempt"), int) or cmd["attempt"] < 1:
        raise Malformed("attempt")
    if not isinstance(cmd.get("step_index"), int) or cmd["step_index"] < 0:
        raise Malformed("step_index")
    if not is_name(cmd.get("step")) or not is_name(cmd.get("action")):
        raise Malformed("step or action")
    if cmd.get("participant", NAME) != NAME:
        raise Malformed("participant")
    if props.type != "saga." + kind:
        raise Malformed("type does not match kind")
    mid = f"saga:{cmd['saga_id']}:{cmd['step_index']}:{kind}:{cmd['attempt']}"
    if props.message_id and props.message_id != mid:
        raise Malformed("message_id")
    if cmd["action"] not in (ACTIONS if kind == "action" else COMPENSATIONS):
        raise Malformed("no handler for " + cmd["action"])
    return cmd


def check_tx(props, body):
    cmd = parse(props, body, ("twopc.prepare", "twopc.commit", "twopc.abort"))
    kind = cmd.get("kind")
    if not cmd.get("tx_id") or cmd.get("participant") != NAME or props.type != "twopc." + str(kind):
        raise Malformed("tx_id, participant or kind")
    if not isinstance(cmd.get("attempt"), int) or cmd["attempt"] < 1:
        raise Malformed("attempt")
    mid = f"tx:{cmd['tx_id']}:{NAME}:{kind}:{cmd['attempt']}"
    if props.message_id and props.message_id != mid:
        raise Malformed("message_id")
    return cmd


# --- deciding (protocol.md section 8, twopc.md section 8) -----------------------------------------

def decide_action(cur, cmd):
    gid, step, attempt = cmd["saga_id"], cmd["step"], cmd["attempt"]
    if not claim(cur, gid, step, "action", {}, attempt) and not reopen(cur, gid, step, "action", attempt):
        return read(cur, gid, step, "action")  # a duplicate, or refused
    cur.execute("SAVEPOINT handler")
    try:
        reply = {"outcome": "succeeded", "output": run_action(cur, cmd)}
    except Business as e:
        cur.execute("ROLLBACK TO SAVEPOINT handler")
        reply = {"outcome": "failed", "error": str(e)}
    return store(cur, gid, step, "action", reply)


def decide_compensation(cur, cmd):
    gid, step, attempt = cmd["saga_id"], cmd["step"], cmd["attempt"]
    if not claim(cur, gid, step, "compensate", {}, attempt):
        return read(cur, gid, step, "compensate")
    reply = {"outcome": "succeeded"}
    if not claim(cur, gid, step, "action", REFUSAL, attempt):
        action = read_locked(cur, gid, step, "action")
        if action["outcome"] == "failed" and action.get("error") != REFUSAL["error"]:
            store(cur, gid, step, "action", REFUSAL)  # no later attempt reopens it
        elif action["outcome"] == "succeeded":
            output = cmd.get("output") if cmd.get("output") is not None else action.get("output")
            try:
                reply = {"outcome": "succeeded", "output": run_compensation(cur, cmd, output)}
            except Exception as e:
                raise Transient(str(e))
    return store(cur, gid, step, "compensate", reply)


def decide_tx(cur, cmd):
    tx, kind = cmd["tx_id"], cmd["kind"]
    if not claim(cur, tx, NAME, kind, {}, cmd["attempt"]):
        return read(cur, tx, NAME, kind)
    if kind == "prepare":
        payload = cmd.get("payload") or {}
        if isinstance(payload, dict) and payload.get("vote") == "yes":
            cur.execute(f"INSERT INTO {S}.prepared (tx_id, participant, payload) VALUES (%s, %s, %s::jsonb)",
                        (tx, NAME, json.dumps(cmd.get("payload"))))
            prepared_timeouts[tx] = (cmd.get("timeout_ms") or 0) / 1000.0 or DEFAULT_SILENCE
            reply = {"outcome": "vote_yes"}
        else:
            reply = {"outcome": "vote_no", "error": "the payload votes no"}
    elif kind == "abort":
        if not claim(cur, tx, NAME, "prepare", TX_REFUSAL, cmd["attempt"]):
            vote = json.loads(read(cur, tx, NAME, "prepare"))
            if vote["outcome"] == "vote_yes":
                cur.execute(f"DELETE FROM {S}.prepared WHERE tx_id = %s AND participant = %s RETURNING 1", (tx, NAME))
                if cur.fetchone() is None:
                    raise Malformed("ABORT after COMMIT")
        reply = {"outcome": "ack"}
    else:
        vote = json.loads(read(cur, tx, NAME, "prepare") or "{}")
        if vote.get("outcome") != "vote_yes":
            raise Malformed("COMMIT without a YES")
        cur.execute(f"DELETE FROM {S}.prepared WHERE tx_id = %s AND participant = %s RETURNING 1", (tx, NAME))
        if cur.fetchone() is None:
            raise Malformed("COMMIT after ABORT")
        reply = {"outcome": "ack"}
    if kind != "prepare":
        prepared_timeouts.pop(tx, None)
    return store(cur, tx, NAME, kind, reply)


prepared_timeouts = {}  # tx_id -> the PREPARE's timeout in seconds, for the decision queries


class Worker:
    def __init__(self):
        self.db = psycopg2.connect(DATABASE_URL)
        self.db.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED)
        migrate(self.db)
        params = pika.URLParameters(AMQP_URL)
        self.conn = pika.BlockingConnection(params)      # consuming
        self.pub_conn = pika.BlockingConnection(params)  # publishing, with confirms
        self.pub = self.pub_conn.channel()
        self.pub.confirm_delivery()
        ch = self.ch = self.conn.channel()
        ch.exchange_declare("sagacoord.commands", "direct", durable=True)
        ch.exchange_declare("sagacoord.replies", "direct", durable=True)
        ch.exchange_declare("sagacoord.dead", "fanout", durable=True)
        ch.queue_declare("sagacoord.dead.letters", durable=True)
        ch.queue_bind("sagacoord.dead.letters", "sagacoord.dead", "")
        for queue, key in ((QUEUE, NAME), (TXQUEUE, NAME + ":twopc")):
            ch.queue_declare(queue, durable=True, arguments=ARGS)
            ch.queue_bind(queue, "sagacoord.commands", routing_key=key)
        ch.basic_qos(prefetch_count=16)
        ch.basic_consume(TXQUEUE, lambda c, d, p, b: self.on_command(d, p, b, check_tx, decide_tx), auto_ack=False)
        ch.basic_consume(QUEUE, lambda c, d, p, b: self.on_command(d, p, b, check_step, self.decide_step), auto_ack=False)
        self.started = time.time()
        self.asked_at_start = False

    @staticmethod
    def decide_step(cur, cmd):
        return (decide_action if cmd["kind"] == "action" else decide_compensation)(cur, cmd)

    def on_command(self, delivery, props, body, check, decide):
        try:
            cmd = check(props, body)
        except Malformed:
            self.ch.basic_nack(delivery.delivery_tag, requeue=False)  # -> sagacoord.dead.letters
            return
        try:
            try:
                with self.db, self.db.cursor() as cur:  # one local transaction; commits on leaving
                    reply = decide(cur, cmd)
            except Transient as e:  # rolled back: nothing stored
                reply = json.dumps({"outcome": "retry", "error": str(e)})
            except Malformed:  # a decision that breaks the protocol: rolled back, dead-lettered
                self.ch.basic_nack(delivery.delivery_tag, requeue=False)
                return
            except Final:
                self.ch.basic_ack(delivery.delivery_tag)
                return
            self.publish(props, reply)
        except (psycopg2.Error, pika.exceptions.AMQPError) as e:
            print("requeue after", e, file=sys.stderr)
            time.sleep(0.5)
            if self.ch.is_open:  # never settle on a channel that is gone
                self.ch.basic_nack(delivery.delivery_tag, requeue=True)
            return
        self.ch.basic_ack(delivery.delivery_tag)  # after the commit and the confirm

    def publish(self, props, reply_text, message_id=None, typ="reply", headers=None):
        if headers is None:
            headers = {k: str(v) for k, v in (props.headers or {}).items() if k in COPIED}
            headers["x-sagacoord-version"] = "1"
        command_id = props.message_id if props else None
        self.pub.basic_publish(
            exchange="sagacoord.replies", routing_key="coordinator", mandatory=True,
            body=reply_text.encode("utf-8"),
            properties=pika.BasicProperties(
                delivery_mode=2, content_type="application/json", type=typ,
                message_id=message_id or "reply:" + command_id, correlation_id=command_id,
                headers=headers))  # raises on a nack or a return: the caller requeues

    def ask_for_decisions(self):
        """twopc.md section 8, step 6: ask about what was prepared before the start, and about
        each transaction silent for longer than its PREPARE's timeout_ms since the vote."""
        with self.db, self.db.cursor() as cur:
            cur.execute(f"""SELECT tx_id, extract(epoch FROM now() - coalesce(last_query_at, prepared_at))::float8,
       prepared_at < to_timestamp(%s) FROM {S}.prepared WHERE participant = %s""", (self.started, NAME))
            due = [tx for tx, silent, before in cur.fetchall()
                   if (before and not self.asked_at_start) or silent > prepared_timeouts.get(tx, DEFAULT_SILENCE)]
            for tx in due:
                cur.execute(f"UPDATE {S}.prepared SET last_query_at = now() WHERE tx_id = %s AND participant = %s", (tx, NAME))
        self.asked_at_start = True
        for tx in due:
            body = json.dumps({"tx_id": tx, "participant": NAME})
            self.publish(None, body, message_id=f"query:{tx}:{NAME}:{int(time.time() * 1e6)}", typ="twopc.query",
                         headers={"x-sagacoord-version": "1", "x-tx-id": tx, "x-participant": NAME})

    def run(self):
        print("worker running", NAME, file=sys.stderr, flush=True)
        while True:
            self.conn.process_data_events(time_limit=0.2)
            self.pub_conn.process_data_events(time_limit=0)  # heartbeats of the publishing link
            self.ask_for_decisions()


if __name__ == "__main__":
    if not SCHEMA.isidentifier() or SCHEMA.lower() != SCHEMA:
        sys.exit("SCHEMA must be a plain lower-case identifier")
    Worker().run()
