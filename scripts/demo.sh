#!/usr/bin/env bash
# The whole system on this machine: a coordinator, the simulated participants and a client that
# starts sagas, against the local PostgreSQL and RabbitMQ. It uses its own database schema and
# RabbitMQ vhost (both recreated on every run) and ends by printing how many sagas completed and
# how many compensated. `make demo` builds the binaries and runs it.
#
# Environment: DEMO_SAGAS (default 200 of each definition), DEMO_ADDR (default 127.0.0.1:7299),
# DEMO_CONSOLE (the operator console's address, default 127.0.0.1:0: a free port, printed),
# DEMO_KEEP=1 (keep the coordinator, the participants and the console running after the outcome,
# until Ctrl-C),
# DEMO_SANDBOX: a directory where `sagalab sandbox` runs (scripts/demo-tls.sh sets it); the demo
# then runs on that sandbox instead, every link on TLS (sagactl's to the coordinator too, with a
# client certificate), with the URLs read from its files and participants that declare nothing on
# the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
N=${DEMO_SAGAS:-200}
ADDR=${DEMO_ADDR:-127.0.0.1:7299}
CONSOLE=${DEMO_CONSOLE:-127.0.0.1:0}
SCHEMA=sagacoord_demo
VHOST=sagacoord-demo
DB_BASE=${SAGACOORD_DEMO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
DB="$DB_BASE&search_path=$SCHEMA"
AMQP="amqp://guest:guest@127.0.0.1:5672/$VHOST"
LOGS=$(mktemp -d)
export SAGACOORD_ADDR=$ADDR

say() { printf '\n== %s\n' "$*"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

if [ -n "${DEMO_SANDBOX:-}" ]; then
  say "sandbox $DEMO_SANDBOX: PostgreSQL and RabbitMQ that take only TLS with client certificates"
  PSQL_URL=$(cat "$DEMO_SANDBOX/admin.database-url")
  COORDINATOR_LINKS=(--database-url-file "$DEMO_SANDBOX/coordinator.database-url" --amqp-url-file "$DEMO_SANDBOX/coordinator.amqp-url"
    --tls-cert "$DEMO_SANDBOX/api.pem" --tls-key "$DEMO_SANDBOX/api.key" --tls-client-ca "$DEMO_SANDBOX/ca.pem"
    --tls-require-client-cert --credentials-file "$DEMO_SANDBOX/credentials.yaml")
  SIM_LINKS=(--database-url-file "$DEMO_SANDBOX/participant-sim.database-url" --amqp-url-file "$DEMO_SANDBOX/participant-sim.amqp-url" --skip-declare)
  # sagactl verifies the coordinator's certificate and presents its own (an operator's).
  export SAGACOORD_TLS_CA=$DEMO_SANDBOX/ca.pem SAGACOORD_CLIENT_CERT=$DEMO_SANDBOX/sagactl.pem SAGACOORD_CLIENT_KEY=$DEMO_SANDBOX/sagactl.key
else
  say "fresh schema $SCHEMA and vhost $VHOST"
  PGOPTIONS='-c client_min_messages=warning' psql -q "$DB_BASE" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA;" \
    -c "DO \$\$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'demo_sim_%' LOOP EXECUTE 'DROP SCHEMA ' || quote_ident(s) || ' CASCADE'; END LOOP; END \$\$;"
  rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
  rabbitmqctl -q add_vhost "$VHOST" >/dev/null
  rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
  PSQL_URL=$DB_BASE
  COORDINATOR_LINKS=(--database-url "$DB" --amqp-url "$AMQP")
  # The console's participants page reads the queues from the management API (off the command line).
  export SAGACOORD_CONSOLE_RABBITMQ_API=${SAGACOORD_CONSOLE_RABBITMQ_API:-http://guest:guest@127.0.0.1:15672}
  SIM_LINKS=(--database-url "$DB_BASE" --amqp-url "$AMQP")
fi

say "coordinator on $ADDR (logs in $LOGS)"
"$BIN/coordinator" serve --migrate "${COORDINATOR_LINKS[@]}" --listen "$ADDR" --console-listen "$CONSOLE" >"$LOGS/coordinator.log" 2>&1 &
pids+=($!)
for i in $(seq 1 100); do
  "$BIN/sagactl" definition list >/dev/null 2>&1 && break
  [ "$i" = 100 ] && { echo "coordinator did not start:"; cat "$LOGS/coordinator.log"; exit 1; }
  sleep 0.1
done
for i in $(seq 1 20); do
  url=$(sed -n 's/^coordinator console on //p' "$LOGS/coordinator.log")
  [ -n "$url" ] && { echo "operator console on $url while the demo runs (docs/console.md)"; break; }
  sleep 0.1
done

say "definitions"
"$BIN/sagactl" definition apply -f examples/transfer.yaml
"$BIN/sagactl" definition apply -f examples/order.yaml

say "participants: participant-sim --config examples/sim.yaml"
"$BIN/participant-sim" --config examples/sim.yaml "${SIM_LINKS[@]}" >"$LOGS/participant-sim.log" 2>&1 &
pids+=($!)

total_money() {
  psql -qtA "$PSQL_URL" -c "SELECT coalesce((SELECT sum(balance) FROM demo_sim_bank_a.accounts),0) + coalesce((SELECT sum(balance) FROM demo_sim_bank_b.accounts),0)" 2>/dev/null || echo "?"
}
for i in $(seq 1 100); do
  [ "$(total_money)" != "?" ] && [ "$(total_money)" != "0" ] && break
  sleep 0.1
done
before=$(total_money)

say "starting $N transfers and $N orders"
start_ns=$(date +%s%N)
for i in $(seq 1 "$N"); do
  from=$(( (i % 20) + 1 )); to=$(( ((i * 7) % 20) + 1 )); amount=$(( (i * 37) % 300 + 1 ))
  echo "transfer {\"from\":\"acct-$from\",\"to\":\"acct-$to\",\"amount\":$amount}"
  echo "order {\"sku\":\"sku-$from\",\"qty\":$(( i % 5 + 1 )),\"account\":\"cust-$to\",\"amount\":$amount}"
done | xargs -P 8 -d '\n' -n 1 sh -c 'line=$1; "$0" saga start "${line%% *}" --input "${line#* }" -o json >/dev/null' "$BIN/sagactl"

started_ns=$(date +%s%N)
echo "started in $(awk "BEGIN {printf \"%.2f\", ($started_ns - $start_ns) / 1e9}")s"
say "waiting for every saga to finish"
for i in $(seq 1 600); do
  open=$("$BIN/sagactl" saga list --all --limit 1000 -o json | jq '[.[] | select(.status | test("RUNNING|COMPENSATING$"))] | length')
  [ "$open" = 0 ] && break
  [ "$i" = 600 ] && { echo "$open sagas still open after 60s"; break; }
  sleep 0.1
done
end_ns=$(date +%s%N)

say "outcome"
"$BIN/sagactl" saga list --all --limit 1000 -o json | jq -r '
  group_by(.definition)[] | "\(.[0].definition): " + (group_by(.status) | map("\(.[0].status | sub("SAGA_STATUS_"; "")) \(length)") | join(", "))'
completed=$("$BIN/sagactl" saga list --all --limit 1000 --status COMPLETED -o json | jq length)
compensated=$("$BIN/sagactl" saga list --all --limit 1000 --status COMPENSATED -o json | jq length)
failed=$("$BIN/sagactl" saga list --all --limit 1000 --status FAILED -o json | jq length)
after=$(total_money)
secs=$(awk "BEGIN {printf \"%.2f\", ($end_ns - $start_ns) / 1e9}")
echo
echo "money in both banks: before $before, after $after"
echo "$((2 * N)) sagas in ${secs}s: $completed completed, $compensated compensated, $failed failed"
[ "$before" = "$after" ] || { echo "money was not conserved"; exit 1; }
[ "$((completed + compensated))" = "$((2 * N))" ] || exit 1
if [ -n "${DEMO_KEEP:-}" ]; then
  echo "the coordinator and the participants keep running: operator console on ${url:-?}; Ctrl-C ends the demo"
  wait
fi
