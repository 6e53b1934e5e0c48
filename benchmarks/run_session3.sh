#!/usr/bin/env bash
# Commands for the third round of docs/results.md. Only the 3-round Release run was completed in that
# session (as /tmp/exp/D with --set eval.n_prompts=8); perf and reveal-bench are still to be rerun.
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export TQDM_DISABLE=1
log() { echo "== $(date +%T) $*"; }
log perf-training; python benchmarks/perf.py --training-only
log reveal-bench; python benchmarks/reveal_bench.py --task toxicity --seeds 0 1 2 --budget 16
log release-3-rounds; revrel unlearn --task toxicity --model smollm2-135m-instruct --config configs/toxicity-strong.yaml \
  --out benchmarks/results/release_toxicity --overwrite -q
log readme-main; rm -rf runs/demo; /usr/bin/time -v revrel unlearn --task toxicity --model smollm2-135m-instruct --out runs/demo -q 2>&1 | grep -E "Elapsed|Maximum resident|done"
log done
