#!/usr/bin/env bash
# Follow-up runs behind docs/results.md: unbiased Reveal comparison, a larger evaluation of every
# bench model (the bench's own eval, 32 prompts x 2 samples, is too noisy to rank methods), one
# stronger Release setting, and the README main command's wall time and peak memory.
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export TQDM_DISABLE=1
B=benchmarks/results/bench_toxicity
log() { echo "== $(date +%T) $*"; }
log reveal-bench; python benchmarks/reveal_bench.py --task toxicity --seeds 0 1 --budget 8
log strong; revrel unlearn --task toxicity --model smollm2-135m-instruct --out $B/revrel-strong --overwrite -q \
  --set release.rounds=3 --set release.epochs=6 --set release.lr=0.002 --set release.lambda_neg=2 --set eval.n_prompts=32
EVAL="--set eval.n_prompts=100 --set eval.samples=4 --seed 1 -q"
log big-eval original; revrel eval --task toxicity --model smollm2-135m-instruct $EVAL --out $B/big_eval_original.json
for m in revrel revrel-strong ga graddiff npo simnpo pem-negation; do
  log big-eval $m; revrel eval --task toxicity --model $B/$m/model $EVAL --out $B/big_eval_$m.json
done
log readme-main; rm -rf runs/demo; /usr/bin/time -v revrel unlearn --task toxicity --model smollm2-135m-instruct --out runs/demo -q 2>&1 | grep -E "Elapsed|Maximum resident|before|done"
log done
