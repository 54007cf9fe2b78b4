#!/usr/bin/env bash
# Makes sure the local PostgreSQL and RabbitMQ that the tests and the demo use are up, starting
# them if they are down (docs/contributing.md describes the machine), and waits until both accept
# connections.
set -euo pipefail

log() { echo "services: $*" >&2; }

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
for i in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  [ "$i" = 60 ] && { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
  sleep 1
done

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
fi
for i in $(seq 1 90); do
  rabbitmqctl -q await_startup >/dev/null 2>&1 && break
  [ "$i" = 90 ] && { log "RabbitMQ did not start"; exit 1; }
  sleep 1
done

# The management plugin gives the tests a fast way to make a vhost per test (they fall back to
# rabbitmqctl without it) and users the UI on :15672.
if ! curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
  rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 || true
  for i in $(seq 1 30); do
    curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
    sleep 1
  done
fi
log "PostgreSQL and RabbitMQ are up"
