"""Export the second test model (Qwen2.5-Coder-0.5B-Instruct, dequantized) as GGUF f16 and q4_1 and read each back.

Checks the qwen2 writer on the real model: the tokenizer read back encodes as the original's, and the per-token NLL
of a few code and prose texts (f16: equal to rounding; q4_1: what 4-bit costs the original itself).

    python benchmarks/qwen_export.py [--model PATH] [--out benchmarks/results/qwen_export.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

TEXTS = ["def add(a, b):\n    return a + b\n",
         "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
         "The quick brown fox jumps over the lazy dog.",
         "import numpy as np\nx = np.arange(10)\nprint(x.sum())"]


def nll(model, tok) -> list[float]:
    out = []
    for t in TEXTS:
        ids = torch.tensor([tok(t)["input_ids"]])
        with torch.no_grad():
            out.append(round(float(model(ids, labels=ids).loss), 5))
    return out


def main(model_path: str, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from revrel.models.gguf_export import export_gguf
    from revrel.models.loading import load_model

    lm = load_model(model_path)
    res: dict = {"model": Path(model_path).name, "texts": len(TEXTS), "original_nll": nll(lm.model, lm.tokenizer)}
    for q in ("f16", "q4_1"):
        with tempfile.TemporaryDirectory(prefix="revrel-qwen-") as d:
            t0 = time.time()
            info = export_gguf(lm.model, lm.tokenizer, Path(d) / f"m.{q}.gguf", q)
            back = AutoModelForCausalLM.from_pretrained(d, gguf_file=f"m.{q}.gguf", dtype=torch.float32).eval()
            btok = AutoTokenizer.from_pretrained(d, gguf_file=f"m.{q}.gguf")
            res[q] = {"bytes": info["bytes"], "tensor_types": info["tensor_types"], "model_type": back.config.model_type,
                      "nll": nll(back, lm.tokenizer), "seconds": round(time.time() - t0, 1),
                      "tokenizer_same": all(btok(t)["input_ids"] == lm.tokenizer(t)["input_ids"] for t in TEXTS)}
    out.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("REVREL_QWEN_GGUF", "~/.cache/revrel/qwen2.5-coder-0.5b-instruct.gguf"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "qwen_export.json"))
    a = ap.parse_args()
    print(json.dumps(main(os.path.expanduser(a.model), Path(a.out)), indent=1))
