"""Run ``revrel unlearn`` on the tiny test task in a subprocess: run_tiny.py OUT MODEL [--resume]."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revrel.config import load_config  # noqa: E402
from revrel.pipeline import unlearn  # noqa: E402

from tiny import register_tiny_task, tiny_overrides  # noqa: E402

register_tiny_task()
out, model = Path(sys.argv[1]), Path(sys.argv[2])
report = unlearn(load_config(None, tiny_overrides(out, model)), resume="--resume" in sys.argv)
print(json.dumps({"rounds": len(report["rounds"])}))
