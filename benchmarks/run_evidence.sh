#!/usr/bin/env bash
# The runs behind docs/results.md, in order, on the embedded default (2 CPU cores here).
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export TQDM_DISABLE=1
log() { echo "== $(date +%T) $*"; }
log reveal-bench; /usr/bin/time -f "%e s, %M KB" python benchmarks/reveal_bench.py --task toxicity --seeds 0 --budget 12
log bench; /usr/bin/time -f "%e s, %M KB" revrel bench --task toxicity --methods revrel,ga,graddiff,npo,simnpo,pem-negation --out benchmarks/results/bench_toxicity \
  --set release.rounds=3 --set eval.n_prompts=32
for m in revrel npo ga pem-negation; do log attack $m; revrel attack --run benchmarks/results/bench_toxicity/$m -q 2>&1 | tail -40; done
for t in toxicity ner code; do log eval $t; /usr/bin/time -f "%e s, %M KB" revrel eval --task $t --model smollm2-135m-instruct --set eval.n_prompts=24 --out benchmarks/results/eval_$t.json -q; done
log done
