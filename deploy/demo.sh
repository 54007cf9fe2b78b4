#!/bin/sh
# The demo service of docker-compose.yml. It registers the example definitions through sagactl,
# starts sagas that complete and sagas that compensate, follows a few of them to the end, then
# starts a batch and prints how every saga ended. sagactl finds the coordinator through
# SAGACOORD_ADDR. Exits 0 when every saga ended COMPLETED or COMPENSATED.
#
# Environment: EXAMPLES (default /examples), DEMO_SAGAS (default 20 of each definition).
set -eu
EXAMPLES=${EXAMPLES:-/examples}
N=${DEMO_SAGAS:-20}

say() { printf '\n== %s\n' "$*"; }

# follow DESCRIPTION sagactl-args...: start a saga, wait for its end and say how it ended
# (sagactl exits 0 for COMPLETED, 3 for COMPENSATED, 4 for FAILED).
follow() {
  what=$1
  shift
  say "$what"
  rc=0
  sagactl saga start "$@" --wait || rc=$?
  case $rc in
    0) echo "-> COMPLETED" ;;
    3) echo "-> COMPENSATED" ;;
    4) echo "-> FAILED (needs an operator: sagactl saga retry ID)" ;;
    *) echo "-> sagactl exited with $rc"; exit 1 ;;
  esac
}

# count STATUS: how many sagas are in STATUS (rows of the table that start with a saga id).
count() {
  sagactl saga list --all --limit 1000 --status "$1" | grep -c '^[0-9a-f]\{8\}-' || true
}

say "waiting for the coordinator at $SAGACOORD_ADDR"
i=0
until sagactl definition list >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then echo "the coordinator did not answer within 60s"; exit 1; fi
  sleep 1
done

say "registering the example definitions"
sagactl definition apply -f "$EXAMPLES/transfer.yaml"
sagactl definition apply -f "$EXAMPLES/order.yaml"

follow "a transfer that completes" \
  transfer --input '{"from":"acct-1","to":"acct-2","amount":10}'
follow "a transfer whose credit fails (no such account): the debit is refunded" \
  transfer --input '{"from":"acct-3","to":"nobody","amount":10}'
follow "a transfer whose debit fails (insufficient funds): nothing to undo" \
  transfer --input '{"from":"acct-4","to":"acct-5","amount":5000}'
follow "an order that completes (shipping may retry forward after the pivot)" \
  order --input '{"sku":"sku-1","qty":2,"account":"cust-1","amount":30}'
follow "an order out of stock: compensated before the pivot" \
  order --input '{"sku":"sku-2","qty":1000,"account":"cust-2","amount":30}'

say "starting $N transfers and $N orders"
i=1
while [ "$i" -le "$N" ]; do
  from=$((i % 20 + 1)); to=$(((i * 7) % 20 + 1)); amount=$(((i * 37) % 300 + 1))
  sagactl saga start transfer --input "{\"from\":\"acct-$from\",\"to\":\"acct-$to\",\"amount\":$amount}" >/dev/null &
  sagactl saga start order --input "{\"sku\":\"sku-$from\",\"qty\":$((i % 5 + 1)),\"account\":\"cust-$to\",\"amount\":$amount}" >/dev/null &
  i=$((i + 1))
done
wait

say "waiting for every saga to finish"
i=0
while [ "$(count RUNNING)" != 0 ] || [ "$(count COMPENSATING)" != 0 ]; do
  i=$((i + 1))
  if [ "$i" -ge 120 ]; then echo "sagas still open after 120s"; break; fi
  sleep 1
done

completed=$(count COMPLETED)
compensated=$(count COMPENSATED)
failed=$(count FAILED)
open=$(($(count RUNNING) + $(count COMPENSATING)))
say "outcome"
sagactl saga list --limit 10
echo
echo "$completed completed, $compensated compensated, $failed failed, $open still open"
echo "Inspect one with: docker compose run --rm demo sagactl saga get ID"
[ "$failed" = 0 ] && [ "$open" = 0 ]
