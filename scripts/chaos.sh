#!/usr/bin/env bash
# Crash safety: `scripts/chaos.sh N [--seed S]` kills a tiny suite with SIGKILL at N random moments, resumes it after
# each kill and checks that every resumed suite ends byte-identical to an uninterrupted one. See scripts/chaos.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" BENCH_DATA_DIR="${BENCH_DATA_DIR:-$(cd .. && pwd)/shared/data}"
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/chaos.py "$@"
