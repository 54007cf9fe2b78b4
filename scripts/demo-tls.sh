#!/usr/bin/env bash
# The demo of scripts/demo.sh with TLS on every link. `sagalab sandbox` starts a PostgreSQL and a
# RabbitMQ of their own, on free ports, that take only TLS with client certificates from a CA it
# makes, and gives the broker the least-privilege users of docs/security.md; the coordinator and
# participant-sim read their URLs from its files (--database-url-file, --amqp-url-file), verify
# the servers' certificates (sslmode=verify-full, amqps:// with cacertfile) and present their own,
# and participant-sim declares nothing (--skip-declare). The coordinator serves its API over TLS
# too, to sagactl's client certificate. Nothing runs on the machine's shared PostgreSQL and
# RabbitMQ. `make demo-tls` builds the binaries and runs it.
#
# Environment: those of scripts/demo.sh (DEMO_SAGAS, DEMO_ADDR).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
# The participants of examples/sim.yaml, whose queues participant-sim's broker user may read.
PARTICIPANTS=bank-a,bank-b,inventory,payments,shipping
DIR=$(mktemp -d /tmp/sagacoord-demo-tls.XXXXXX)
chmod 755 "$DIR" # the sandbox's servers run as the postgres and rabbitmq users

"$BIN/sagalab" sandbox --dir "$DIR" --participants "$PARTICIPANTS" >"$DIR/sandbox.log" 2>&1 &
sandbox=$!
cleanup() {
  kill "$sandbox" 2>/dev/null || true
  wait "$sandbox" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

printf '\n== sandbox in %s: CA, certificates, PostgreSQL and RabbitMQ\n' "$DIR"
for i in $(seq 1 1200); do
  [ -f "$DIR/sandbox.env" ] && break
  if ! kill -0 "$sandbox" 2>/dev/null || [ "$i" = 1200 ]; then
    echo "sagalab sandbox did not start:"
    cat "$DIR/sandbox.log"
    exit 1
  fi
  sleep 0.1
done
cat "$DIR/sandbox.log"

DEMO_SANDBOX=$DIR scripts/demo.sh
