#!/usr/bin/env bash
# Starts a coordinator and three no-op participants (participant-sim) on the local PostgreSQL and
# RabbitMQ, in their own schema and vhost (recreated each run), and runs `sagalab bench` against
# them. Arguments are passed to sagalab bench, e.g. scripts/bench.sh --rate 1000 --duration 20s.
# The participants (scripts/bench-participants.yaml, or the file BENCH_SIM_CONFIG names) keep
# their barrier in database "test", so pg_commits_per_saga counts only the coordinator's own
# commits (database "postgres"). BENCH_COORDINATOR_FLAGS adds flags to the
# coordinator, e.g. BENCH_COORDINATOR_FLAGS='--max-active-sagas 2000'. BENCH_KEEP_TABLES=1 keeps the
# coordinator's tables of the previous run (to measure again on a table --prefill-finished filled).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
ADDR=${BENCH_ADDR:-127.0.0.1:7298}
SCHEMA=sagacoord_bench
VHOST=sagacoord-bench
PG=postgres://postgres@127.0.0.1:5432
DB="$PG/postgres?sslmode=disable&search_path=$SCHEMA"
SIMDB="$PG/test?sslmode=disable"
AMQP="amqp://guest:guest@127.0.0.1:5672/$VHOST"
LOGS=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${BENCH_KEEP_TABLES:-}" ]; then
  PGOPTIONS='-c client_min_messages=warning' psql -q "$PG/postgres" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA;"
fi
PGOPTIONS='-c client_min_messages=warning' psql -q "$SIMDB" -c "DROP SCHEMA IF EXISTS bench_sim_bench_a CASCADE; DROP SCHEMA IF EXISTS bench_sim_bench_b CASCADE; DROP SCHEMA IF EXISTS bench_sim_bench_c CASCADE;"
rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null

# Both processes serve metrics: the bench reads their statement and commit counts from them.
METRICS_COORD=${BENCH_METRICS_COORD:-127.0.0.1:9464}
METRICS_SIM=${BENCH_METRICS_SIM:-127.0.0.1:9465}
"$BIN/coordinator" serve --migrate --database-url "$DB" --amqp-url "$AMQP" --listen "$ADDR" --log-level warn ${BENCH_COORDINATOR_FLAGS:-} ${BENCH_DEBUG_LISTEN:+--debug-listen "$BENCH_DEBUG_LISTEN"} --metrics-listen "$METRICS_COORD" >"$LOGS/coordinator.log" 2>&1 &
coord=$!
pids+=($coord)
"$BIN/participant-sim" --config "${BENCH_SIM_CONFIG:-scripts/bench-participants.yaml}" \
  --database-url "$SIMDB" --amqp-url "$AMQP" --log-level warn --metrics-listen "$METRICS_SIM" >"$LOGS/participant-sim.log" 2>&1 &
sim=$!
pids+=($sim)
for i in $(seq 1 100); do
  SAGACOORD_ADDR=$ADDR "$BIN/sagactl" definition list >/dev/null 2>&1 && break
  [ "$i" = 100 ] && { echo "coordinator did not start:"; cat "$LOGS/coordinator.log"; exit 1; }
  sleep 0.1
done
kill -0 "$sim" 2>/dev/null || { echo "participant-sim exited:"; cat "$LOGS/participant-sim.log"; exit 1; }
echo "logs in $LOGS" >&2
SAGACOORD_ADDR=$ADDR "$BIN/sagalab" bench --database-url "$DB" --amqp-url "$AMQP" --pid "$coord" \
  --metrics "coordinator=http://$METRICS_COORD/metrics" --metrics "participants=http://$METRICS_SIM/metrics" "$@"
