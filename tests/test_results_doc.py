"""docs/results.md is generated from benchmarks/results/ (benchmarks/build_results.py): a results file
changed without rebuilding the document fails here, so the document always describes the files."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str):
    """A script of benchmarks/ as a module (they import each other by bare name)."""
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_results_doc_matches_the_results_files():
    build_results = _bench("build_results")
    assert (ROOT / "docs" / "results.md").read_text() == build_results.build(), "run: python benchmarks/build_results.py"


def test_findings_sections_name_sources_the_builder_knows():
    build_results = _bench("build_results")
    known = set(build_results.SECTIONS) | {"summary"} | {p.name for p in (ROOT / "benchmarks" / "results").iterdir() if p.is_dir()}
    unknown = set(build_results.findings()) - known
    assert not unknown, f"FINDINGS.md sections with no matching results: {sorted(unknown)}"


def _matched_test():
    return _bench("matched_test")


def _pts(pairs, key="lambda"):
    return [{key: s, "utility": {"change": u}, "target": {"change": 2 * u}} for s, u in pairs]


def test_matched_test_brackets_the_dev_crossing_and_never_reads_test_to_choose():
    mt = _matched_test()
    curve = _pts([(0.5, 0.01), (1, 0.03), (2, 0.07), (4, 0.2), (8, 0.9)])
    assert mt.chosen_strengths(curve, 0.05, continuous=True) == [1, 2, 4]  # last below, first above, one more
    assert mt.chosen_strengths(_pts([(1, 0.01), (2, 0.02)]), 0.05, continuous=True) == [1, 2]  # never reached: its furthest two
    # the first point already past the budget: a continuous strength adds half of it, a step count cannot
    assert mt.chosen_strengths(_pts([(8, 0.1), (16, 0.3)]), 0.05, continuous=True) == [4, 8, 16]
    assert mt.chosen_strengths(_pts([(4, 0.1), (8, 0.3)]), 0.05, continuous=False) == [4, 8]


def test_matched_test_samples_where_test_utility_reaches_the_budget():
    mt = _matched_test()
    pts = _pts([(1, 0.03), (2, 0.07), (4, 0.2)], key="strength")
    assert abs(mt.matched_strength(pts, continuous=True) - 1.5) < 1e-9  # 0.03 -> 0.07 crosses 0.05 half way
    assert mt.matched_strength(_pts([(4, 0.03), (8, 0.2)], key="strength"), continuous=False) == 4  # the nearer of the two steps
    assert mt.matched_strength(_pts([(4, 0.01), (8, 0.06)], key="strength"), continuous=False) == 8
    assert mt.matched_strength(_pts([(1, 0.01), (2, 0.02)], key="strength"), continuous=True) == 2  # never reached: the strongest


def test_matched_test_rebuilds_a_method_whose_dev_plan_changed():
    mt = _matched_test()
    plan = {"rec": "r", "settings": {"release.span_loss": "true"}, "strengths": [0.25, 0.5, 1.0]}
    assert mt.same_plan(dict(plan, points=[]), plan)
    # same strengths, another best setting on dev (NER's span loss -> span loss + Ext-Sub): the saved test points are stale
    assert not mt.same_plan(dict(plan, settings={"release.span_loss": "true", "release.ext_sub": "both"}), plan)
    assert not mt.same_plan(dict(plan, rec="other"), plan)


def _full_bench():
    return _bench("full_bench")


def test_full_bench_sweeps_every_setting_the_matched_bench_compares():
    """`revrel bench --preset full` must rebuild, from nothing, each curve the matched table uses (same record,
    same settings, the strengths it brackets the budget with): else its tables could not be reproduced."""
    fb, mt = _full_bench(), _matched_test()
    for task, plan in fb.PLANS.items():
        for m in mt.plan(task, mt.BUDGET):
            rec = Path(m["rec"]).name.removeprefix(f"release_rec_{task}").lstrip("_")  # '', 'real' or a Reveal variant
            s = next((s for s in plan.sweeps if s.rec == rec and s.settings() == m["settings"]), None)
            assert s is not None, f"{task}: no full-bench sweep makes {m['family']} {m['settings']}"
            halved = {min(s.strengths) / 2} if not s.method else set()  # matched_test's extra point below a first crossing
            assert set(m["strengths"]) <= set(s.strengths) | halved, (task, m["family"], m["strengths"], s.strengths)


def test_full_bench_resumes_from_what_the_results_hold(tmp_path):
    """Run as a copied checkout: nothing recorded -> every step runs; a record and one finished curve -> those are done,
    a curve with a missing strength is not."""
    import json
    import shutil
    import subprocess

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "full_bench.py", tmp_path / "benchmarks")
    script = [sys.executable, str(tmp_path / "benchmarks" / "full_bench.py"), "--task", "toxicity", "--dry-run"]

    def marks() -> list[str]:
        out = subprocess.run(script, capture_output=True, text=True, check=True).stdout
        return [ln.split()[1] for ln in out.splitlines() if ln.startswith("[")]

    assert set(marks()) == {"run"}
    rec = tmp_path / "benchmarks" / "results" / "release_rec_toxicity"
    rec.mkdir()
    (rec / "record.json").write_text(json.dumps({"forget_size": 7}))
    rows = [{"settings": {}, "lambda": lam} for lam in (1.0, 2.0, 4.0, 8.0)]
    rows += [{"settings": {"release.span_loss": "true", "release.negate_only": "mlp"}, "lambda": lam} for lam in (2.0, 4.0, 8.0)]
    (rec / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = marks()
    # record, real record, the 'fs80' Reveal variant's record, pem-negation curve, revrel's curve (lambda 16 missing)
    assert m[:5] == ["done", "run", "run", "done", "run"]
    assert set(m[5:]) == {"run"}
    out = subprocess.run(script, capture_output=True, text=True, check=True).stdout
    assert "--real 7 " in out  # the real-data record is as large as Reveal's forget set


def test_full_bench_plans_each_step_after_the_ones_before_it_ran(tmp_path):
    """From nothing: the real-data record's size is only known once the Reveal record exists, so a step's argv must be
    planned after the steps before it ran. The benchmark scripts are stood in for by one that logs its argv (and, as
    release_record.py, writes a record): what is tested is the chaining, not the scripts."""
    import shutil
    import subprocess

    bench = tmp_path / "benchmarks"
    (bench / "results").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "full_bench.py", bench)
    stand_in = (
        "import json, sys\nfrom pathlib import Path\n"
        f"open({str(tmp_path / 'calls.log')!r}, 'a').write(Path(sys.argv[0]).name + ' ' + ' '.join(sys.argv[1:]) + '\\n')\n"
        "a = sys.argv[1:]\n"
        "if Path(sys.argv[0]).name == 'release_record.py':\n"
        "    out = Path(a[a.index('--out') + 1]); out.mkdir(parents=True, exist_ok=True)\n"
        "    (out / 'record.json').write_text(json.dumps({'forget_size': 5}))\n")
    for name in ("release_record.py", "release_sweep.py", "baseline_sweep.py", "quick_row.py", "matched_test.py", "build_results.py"):
        (bench / name).write_text(stand_in)
    subprocess.run([sys.executable, str(bench / "full_bench.py"), "--task", "toxicity"], check=True, capture_output=True)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith("release_record.py") and "--real" not in calls[0]
    assert calls[1].startswith("release_record.py") and "--real 5 " in calls[1]
    assert [c.split()[0] for c in calls[-3:]] == ["quick_row.py", "matched_test.py", "build_results.py"]


def test_bench_full_needs_a_checkout_and_quick_needs_out(tmp_path):
    import pytest

    from revrel.commands.bench import full_bench_script
    from revrel.errors import RevrelError

    with pytest.raises(RevrelError, match="source checkout"):
        full_bench_script(tmp_path)
    assert full_bench_script(ROOT) == ROOT / "benchmarks" / "full_bench.py"
