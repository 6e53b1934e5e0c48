#!/usr/bin/env bash
# The README's test command: unit tests (tiny models) + integration tests (the embedded default).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
