import os
import subprocess
import sys
from pathlib import Path

import pytest

from revrel.cli import main


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "revrel.cli", *args], capture_output=True, text=True, timeout=120)


def test_missing_model_path_one_line_exit_2(tmp_path):
    r = _run_cli("unlearn", "--task", "toxicity", "--model", "/no/such/path", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("revrel: error:") and "/no/such/path" in lines[0]
    assert "Traceback" not in r.stderr


def test_malformed_yaml_one_line_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("reveal: {k: [1, 2\n")
    r = _run_cli("unlearn", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not valid YAML" in lines[0]
    assert not (tmp_path / "o").exists()  # nothing written for a bad config


@pytest.mark.parametrize("args,needle", [
    (["unlearn", "--task", "nope", "--out", "x"], "unknown task 'nope'"),
    (["unlearn", "--set", "release.pem.lr=-1", "--out", "x"], "release.pem.lr"),
    (["unlearn", "--set", "reveal.k", "--out", "x"], "section.key=value"),
    (["eval", "--task", "toxicity", "--set", "reveal.oracle=nope"], "no oracle 'nope'"),
    (["bench", "--task", "code"], "needs --out DIR"),
    (["unlearn", "--set", "release.edits=[{negat: {}}]", "--out", "x"], "release.edits[0]: unknown edit 'negat'; known edits: negate, prune, suppress"),
    (["unlearn", "--set", "release.edits=[{negate: {lambda: 2}}]", "--out", "x"], "unknown config key 'release.edits[0].negate.lambda'"),
    (["unlearn", "--set", "release.edits=[{suppress: {tokens: 0}}]", "--out", "x"], "release.edits[0].suppress.tokens is a number of output tokens"),
    (["unlearn", "--set", "release.edits=[]", "--out", "x"], "release.edits must list at least one edit"),
    (["unlearn", "--set", "method=dpo", "--out", "x"], "method must be one of revrel, ga, graddiff, npo, simnpo, pem-negation"),
])
def test_user_errors_exit_2(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_unlearn_on_tiny_via_cli(tiny_dir, tmp_path, capsys):
    out = tmp_path / "cli-run"
    sets = ["reveal.n_soft=2", "reveal.n_paraphrases=0", "reveal.n_init=2", "reveal.budget=1", "reveal.k=2", "reveal.max_new_tokens=6",
            "reveal.relevance_threshold=0", "release.rounds=1", "release.pem.rank=2", "release.n_retain=2", "release.stop_on_plateau=false",
            "release.budget=10", "eval.n_prompts=1", "eval.samples=1", "eval.max_new_tokens=4", "eval.n_ppl=2"]
    args = ["unlearn", "--task", "tiny", "--model", str(tiny_dir), "--out", str(out), "-q"] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 0
    assert (out / "report.json").is_file()
    printed = capsys.readouterr().out
    assert "keep-side cost" in printed and "time: " in printed  # the budget spent and each stage's time
    assert main(args) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # finished run: resume is a no-op that rewrites the report


def test_quiet_run_prints_no_progress_bars_and_a_one_screen_summary(tiny_dir, tmp_path):
    """-q silences every bar (generation, training, rounds); the summary has intervals and probe lines;
    `revrel eval` on the run compares against the run's stored before-metrics."""
    out = tmp_path / "quiet-run"
    sets = ["reveal.n_soft=2", "reveal.n_paraphrases=0", "reveal.n_init=2", "reveal.budget=1", "reveal.k=2", "reveal.max_new_tokens=6",
            "reveal.relevance_threshold=0", "reveal.batch_size=2", "release.rounds=1", "release.pem.rank=2", "release.n_retain=4",
            "release.stop_on_plateau=false", "release.budget=10", "release.pem.batch_size=1", "eval.n_prompts=4", "eval.samples=1",
            "eval.max_new_tokens=4", "eval.n_ppl=2", "eval.batch_size=2", "eval.probe_items=3"]
    env_args = ["--task", "tiny", "--model", str(tiny_dir), "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    plugin = {"REVREL_PLUGINS": "tiny", "PYTHONPATH": str(Path(__file__).parent), "TQDM_DISABLE": ""}
    r = subprocess.run([sys.executable, "-m", "revrel.cli", "unlearn", "-q", *env_args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **plugin})
    assert r.returncode == 0, r.stderr
    assert "it/s" not in r.stderr and "%|" not in r.stderr, r.stderr[-500:]  # no tqdm bar anywhere
    lines = r.stdout.strip().splitlines()
    assert len(lines) <= 25  # one screen
    assert any(ln.startswith("mean_relevance") and "[" in ln for ln in lines)  # value [lo, hi]
    assert any(ln.startswith("target (rude)") and "±" in ln for ln in lines)
    assert any(ln.startswith("selectivity") for ln in lines) and "wall time" in r.stdout
    e = subprocess.run([sys.executable, "-m", "revrel.cli", "eval", "-q", "--task", "tiny", "--model", str(out / "model"),
                        *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, timeout=300, env={**os.environ, **plugin})
    assert e.returncode == 0, e.stderr
    assert "stored before-metrics" in e.stdout and "change ± SE" in e.stdout and "%|" not in e.stderr
    # a bar would have been drawn without -q (the switch is what silenced it)
    v = subprocess.run([sys.executable, "-m", "revrel.cli", "eval", "--task", "tiny", "--model", str(tiny_dir),
                        *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, timeout=300,
                       env={**{k: x for k, x in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}, **plugin})
    assert v.returncode == 0 and "%|" in v.stderr
