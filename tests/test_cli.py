import subprocess
import sys

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
    (["unlearn", "--set", "release.lr=-1", "--out", "x"], "release.lr"),
    (["unlearn", "--set", "reveal.k", "--out", "x"], "section.key=value"),
    (["eval", "--task", "toxicity", "--set", "reveal.oracle=nope"], "no oracle 'nope'"),
])
def test_user_errors_exit_2(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_unlearn_on_tiny_via_cli(tiny_dir, tmp_path, capsys):
    out = tmp_path / "cli-run"
    sets = ["reveal.n_soft=2", "reveal.n_paraphrases=0", "reveal.n_init=2", "reveal.budget=1", "reveal.k=2", "reveal.max_new_tokens=6",
            "reveal.relevance_threshold=0", "release.rounds=1", "release.rank=2", "release.n_retain=2", "release.relevance_target=0",
            "release.utility_budget=1000", "eval.n_prompts=1", "eval.samples=1", "eval.max_new_tokens=4", "eval.n_ppl=2"]
    args = ["unlearn", "--task", "tiny", "--model", str(tiny_dir), "--out", str(out), "-q"] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 0
    assert (out / "report.json").is_file()
    assert main(args) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # finished run: resume is a no-op that rewrites the report
