"""Rows of docs/reliability.md: bad input, full disk, Ctrl-C, kills at random points."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from revrel.cli import main
from revrel.config import load_config
from revrel.errors import RevrelError
from revrel.io import atomic_write_json, read_jsonl, write_jsonl
from revrel.pipeline import unlearn

from tiny import tiny_overrides

HELPER = Path(__file__).parent / "helpers" / "run_tiny.py"


def _no_time(metrics: dict) -> dict:
    """Everything but wall-clock fields (``seconds``, ``seconds_generation``, ...), which differ run to run."""
    return {k: v for k, v in metrics.items() if not k.startswith("seconds")}


@pytest.mark.parametrize("content,needle", [
    (b"", "no records"),
    (b'{"instruction": "a", "response": "b"}\n{bad json\n', ":2: not valid JSON"),
    (b'{"instruction": "a"}\n', "missing text field 'response'"),
    (b'[1, 2]\n', "expected a JSON object"),
    (b'{"instruction": "\xff\xfe", "response": "x"}\n', "not UTF-8"),
])
def test_bad_retain_file_is_one_line_error(tiny_dir, tmp_path, content, needle):
    f = tmp_path / "retain.jsonl"
    f.write_bytes(content)
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_dir, release={"retain_from": str(f)}))
    with pytest.raises(RevrelError, match=needle):
        unlearn(cfg)


def test_bad_forget_file_for_baseline(tiny_dir, tmp_path):
    f = tmp_path / "forget.jsonl"
    f.write_text('{"prompt": "x"}\n')
    cfg = load_config(None, tiny_overrides(tmp_path / "run", tiny_dir, method="ga", baseline={"forget_source": str(f)}))
    with pytest.raises(RevrelError, match="missing text field 'instruction'"):
        unlearn(cfg)


def test_full_disk_keeps_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"old": True})

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(RevrelError, match="No space left on device"):
        atomic_write_json(target, {"new": True})
    with pytest.raises(RevrelError, match="free disk space"):
        write_jsonl(tmp_path / "forget.jsonl", [{"a": 1}])
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temp or partial files


def test_full_disk_during_run_is_exit_2(tiny_dir, tmp_path, monkeypatch, capsys):
    import revrel.release.checkpoint as ck

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "st_save_model", no_space)
    out = tmp_path / "run"
    sets = [f"{s}.{k}={v}" for s in ("reveal", "release", "eval") for k, v in tiny_overrides(out, tiny_dir)[s].items()]
    code = main(["unlearn", "--task", "tiny", "--model", str(tiny_dir), "--out", str(out), "-q"] + [x for s in sets for x in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "free disk space" in err and "\n" not in err
    assert not list((out / "state").glob("*")) if (out / "state").exists() else True


def _start(out, model, *extra):
    env = dict(os.environ, TQDM_DISABLE="1")
    return subprocess.Popen([sys.executable, str(HELPER), str(out), str(model), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_ctrl_c_then_resume(tiny_dir, tmp_path):
    """SIGINT mid-run: one line, exit 130 via the CLI handler, and --resume finishes the run."""
    out = tmp_path / "run"
    over = tiny_overrides(out, tiny_dir)
    sets = [f"{s}.{k}={v}" for s in ("reveal", "release", "eval") for k, v in over[s].items()]
    cmd = [sys.executable, "-m", "revrel.cli", "unlearn", "--task", "tiny", "--model", str(tiny_dir), "--out", str(out), "-q"]
    cmd += [x for s in sets for x in ("--set", s)]
    env = dict(os.environ, TQDM_DISABLE="1", REVREL_PLUGINS="tiny", PYTHONPATH=str(Path(__file__).parent))
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "progress.json").is_file() and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("run finished before the signal landed")
    assert p.returncode == 130, err
    assert [ln for ln in err.splitlines() if ln.strip()] == ["revrel: interrupted; finished rounds are saved, continue with --resume"]
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "report.json").is_file()


def test_sigkill_at_random_times_then_resume(tiny_dir, tmp_path):
    """Kill points drawn at random over the whole run (reveal, training, negation, writing)."""
    ref = tmp_path / "ref"
    t0 = time.time()
    p = _start(ref, tiny_dir)
    p.communicate(timeout=300)
    assert p.returncode == 0
    total = time.time() - t0
    expected = read_jsonl(ref / "forget.jsonl"), _no_time(json.loads((ref / "report.json").read_text())["after"]), load_file(str(ref / "model" / "model.safetensors"))
    rng = random.Random(0)
    tried = 0
    for seed in range(6):
        out = tmp_path / f"k{seed}"
        p = _start(out, tiny_dir)
        time.sleep(rng.uniform(0.3, total))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        tried += 1
        p = _start(out, tiny_dir, "--resume")
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        got = read_jsonl(out / "forget.jsonl"), _no_time(json.loads((out / "report.json").read_text())["after"]), load_file(str(out / "model" / "model.safetensors"))
        assert got[0] == expected[0] and got[1] == expected[1]
        assert all(torch.equal(got[2][k], expected[2][k]) for k in expected[2])
    assert tried == 6
