#!/usr/bin/env bash
# Makes the brokers of the broker-route tests reachable on loopback and exports the
# variables that turn those tests on. Source it (`. scripts/ci-brokers.sh`) from CI, or run
# it with a command to run under those variables (`scripts/ci-brokers.sh cargo test ...`).
#
# Idempotent: services already listening are left alone; tansu (a Kafka-API broker) is
# installed outside the checkout only when missing, and started only when 9092 is free.
# If tansu cannot be installed or started, HERALD_TEST_KAFKA_BOOTSTRAP stays unset and the
# Kafka tests print "skipped: ..." instead of failing the run; the same holds for moto (SQS,
# HERALD_TEST_SQS_URL) and Google's Pub/Sub emulator (HERALD_TEST_PUBSUB_EMULATOR_HOST).

herald_brokers_main() {
  local tools="${HERALD_TOOLS:-/var/cache/herald-tools}"
  local tansu="$tools/bin/tansu"
  local tansu_data="${HERALD_TANSU_DATA:-/var/cache/herald-tansu}"

  up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
  wait_up() { local i; for i in $(seq 1 "${2:-60}"); do up "$1" && return 0; sleep 1; done; return 1; }

  # ensure NAME PORT START-COMMAND: start it when nothing listens on PORT.
  ensure() {
    local name=$1 port=$2 start=$3
    if ! up "$port"; then
      echo "ci-brokers: $name is not listening on $port; starting it"
      bash -c "$start" || echo "ci-brokers: starting $name failed"
      wait_up "$port" 60 || { echo "ci-brokers: $name is still down on $port"; return 1; }
    fi
  }

  ensure NATS 4222 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log' \
    && export HERALD_TEST_NATS_URL="${HERALD_TEST_NATS_URL:-nats://127.0.0.1:4222}"
  ensure RabbitMQ 5672 'rabbitmq-server -detached' \
    && export HERALD_TEST_RABBITMQ_URL="${HERALD_TEST_RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
  ensure Redis 6379 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log' \
    && export HERALD_TEST_REDIS_URL="${HERALD_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

  # SQS: moto's server (PyPI `moto[server]`, installed with pip when missing; boto3 comes with
  # it and is the SQS tests' third-party consumer). The restart test runs a moto of its own.
  # moto_server: on PATH, or beside the python3 that pip installs into.
  find_moto() {
    command -v moto_server && return
    python3 -c 'import os, sys; p = os.path.join(os.path.dirname(sys.executable), "moto_server"); print(p if os.access(p, os.X_OK) else "")' 2>/dev/null || true
  }
  local moto
  moto=$(find_moto)
  if [ -z "$moto" ]; then
    echo "ci-brokers: installing moto[server] with pip"
    python3 -m pip install --quiet 'moto[server]' boto3 > /tmp/moto-install.log 2>&1 \
      || { echo "ci-brokers: installing moto failed (see /tmp/moto-install.log)"; tail -5 /tmp/moto-install.log; }
    moto=$(find_moto)
  fi
  if [ -n "$moto" ]; then
    ensure moto 4566 "cd /tmp && setsid nohup '$moto' -H 127.0.0.1 -p 4566 > /tmp/moto.log 2>&1 &" \
      && export HERALD_TEST_SQS_URL="${HERALD_TEST_SQS_URL:-http://127.0.0.1:4566}" \
      && export HERALD_TEST_MOTO_SERVER="${HERALD_TEST_MOTO_SERVER:-$moto}"
  else
    echo "ci-brokers: no moto_server; the SQS tests will skip"
  fi

  # Pub/Sub: Google's emulator (Debian's google-cloud-cli-pubsub-emulator, with the machine
  # image; not in any registry Herald may use). Without it the Pub/Sub tests skip.
  local gcloud sdk_root
  gcloud=$(command -v gcloud || true)
  sdk_root=""
  [ -n "$gcloud" ] && sdk_root=$(dirname "$(dirname "$(readlink -f "$gcloud")")")
  if [ -n "$gcloud" ] && [ -d "$sdk_root/platform/pubsub-emulator" ]; then
    ensure "Pub/Sub emulator" 8085 "cd /tmp && setsid nohup '$gcloud' beta emulators pubsub start --host-port=127.0.0.1:8085 > /tmp/pubsub-emulator.log 2>&1 &" \
      && export HERALD_TEST_PUBSUB_EMULATOR_HOST="${HERALD_TEST_PUBSUB_EMULATOR_HOST:-127.0.0.1:8085}" \
      && export HERALD_TEST_GCLOUD="${HERALD_TEST_GCLOUD:-$gcloud}"
  else
    echo "ci-brokers: the Pub/Sub emulator is not installed (google-cloud-cli-pubsub-emulator); the Pub/Sub tests will skip"
  fi

  # CI has the machine to itself: let the test that stops and starts the real NATS server run.
  if [ "${CI:-}" = "true" ] && [ -n "${HERALD_TEST_NATS_URL:-}" ]; then
    export HERALD_TEST_RESTART_NATS="${HERALD_TEST_RESTART_NATS:-1}"
  fi

  if ! up 9092; then
    if [ ! -x "$tansu" ]; then
      echo "ci-brokers: installing tansu into $tools (about 11 minutes on 2 cores)"
      CARGO_TARGET_DIR="${HERALD_TANSU_BUILD:-/var/cache/tansu-build}" \
        cargo install --root "$tools" tansu --features dynostore,libsql \
        > /tmp/tansu-install.log 2>&1 \
        || { echo "ci-brokers: installing tansu failed (see /tmp/tansu-install.log):"; tail -20 /tmp/tansu-install.log; }
    fi
    if [ -x "$tansu" ]; then
      mkdir -p "$tansu_data"
      echo "ci-brokers: starting tansu on 127.0.0.1:9092"
      # tansu reads the path after sqlite:// as relative to its working directory.
      (cd "$tansu_data" && nohup "$tansu" broker \
        --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 \
        --storage-engine sqlite://tansu.db \
        > /tmp/tansu.log 2>&1 &)
      wait_up 9092 30 || { echo "ci-brokers: tansu did not start:"; tail -20 /tmp/tansu.log; }
    fi
  fi
  # Kafka tests that stage faults (lost acknowledgements, a broker that goes away, records
  # it refuses) start a tansu of their own, in memory, from this binary.
  if [ -x "$tansu" ]; then
    export HERALD_TEST_TANSU="${HERALD_TEST_TANSU:-$tansu}"
  fi
  if up 9092; then
    export HERALD_TEST_KAFKA_BOOTSTRAP="${HERALD_TEST_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
  else
    echo "ci-brokers: no Kafka-API broker on 9092; the Kafka tests will skip"
  fi
  echo "ci-brokers: NATS=${HERALD_TEST_NATS_URL:-unset} RabbitMQ=${HERALD_TEST_RABBITMQ_URL:-unset} Redis=${HERALD_TEST_REDIS_URL:-unset} Kafka=${HERALD_TEST_KAFKA_BOOTSTRAP:-unset} tansu=${HERALD_TEST_TANSU:-unset} SQS=${HERALD_TEST_SQS_URL:-unset} Pub/Sub=${HERALD_TEST_PUBSUB_EMULATOR_HOST:-unset}"
}

herald_brokers_main
unset -f herald_brokers_main

# Run as a command: run the rest of the arguments under the exported variables.
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "$#" -gt 0 ]; then
  exec "$@"
fi
