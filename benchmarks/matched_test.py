"""The methods side by side on the TEST split, each at the strength its dev curve chose for a fixed utility cost.

    python benchmarks/matched_test.py --task code      # -> benchmarks/results/matched_test_code/

For every method in docs/results.md's dev "matched utility" table (its best dev setting: revrel's Release
on Reveal's data, pem-negation on Reveal's and on real data, NPO / GradDiff on real data), the strengths
(lambda or optimizer steps) whose dev points bracket the utility budget (+0.05 nats/token) are rebuilt and
scored on the task's test likelihood probe (the preset's probe: ``configs/T.yaml``'s eval section). The
target change at the budget is then interpolated on the test points themselves, so nothing is selected
on test. Negation methods reuse the forget PEMs the dev sweep saved under the record; gradient baselines
train again (one run, scored at each chosen step). The preset run (``benchmarks/results/preset_T``) is
added as its own point.

Each method runs in its own subprocess so its wall time and peak memory are its own; a method whose
file exists is skipped, so the bench resumes. Writes ``method_*.json``, ``original.json`` and
``matched.json`` (the summary docs/results.md reads).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_results import matched_rows, with_intervals  # noqa: E402
from end_to_end import timed_run  # noqa: E402
from release_sweep import at_budget, negation_point  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RES = ROOT / "benchmarks" / "results"
BUDGET = 0.05  # nats/token of utility change at which methods are compared


def chosen_strengths(points: list[dict], budget: float, continuous: bool) -> list[float]:
    """The dev points around the budget crossing: the last one below it, the first one at or above it and
    the next one (test utility may cross a little later); a curve that never reaches it: its last two.
    When the first point is already past the budget and the strength is continuous (lambda), half of it
    is added, so the test interpolation does not lean on the straight line from the original."""
    pts = sorted(points, key=lambda r: r["lambda"])
    i = next((k for k, r in enumerate(pts) if r["utility"]["change"] >= budget), None)
    keep = [r["lambda"] for r in (pts[-2:] if i is None else pts[max(i - 1, 0):i + 2])]
    return [keep[0] / 2] + keep if i == 0 and continuous else keep


def same_plan(done: dict, m: dict) -> bool:
    """Whether a saved method result was built from the plan ``m`` (same record, setting and strengths)."""
    return all(done.get(k) == m[k] for k in ("rec", "settings", "strengths"))


def plan(task: str, budget: float) -> list[dict]:
    out = []
    for r in matched_rows(task, budget):
        slug = re.sub(r"[^a-z0-9]+", "_", r["family"].lower()).strip("_")
        out.append({"slug": slug, "family": r["family"], "setting": r["setting"], "rec": str(r["rec"].relative_to(ROOT)),
                    "settings": r["points"][0]["settings"],
                    "strength": r["strength"], "dev_at_budget": r["at_budget"], "dev_far": r["far"],
                    "strengths": chosen_strengths(r["points"], budget, r["strength"] == "lambda"),
                    "dev_points": [{"strength": p["lambda"], "target": p["target"]["change"], "utility": p["utility"]["change"]} for p in r["points"]]})
    return out


def test_config(task_name: str, **eval_over):
    """The preset's config (``configs/T.yaml``) on the test split: its eval section is what the preset reports."""
    from revrel.config import load_config

    return load_config(str(ROOT / "configs" / f"{task_name}.yaml"), {"eval": {"split": "test", **eval_over}})


def test_prober(task_name: str, tok, out: Path):
    """Scores a model on the preset's test probe, paired against the original's per-text sums (``original.json``)."""
    from revrel.pipeline import round_prober
    from revrel.tasks import get_task

    return round_prober(get_task(task_name), test_config(task_name), tok, json.loads((out / "original.json").read_text())["items"])


def sampled_metrics(task_name: str, model, tok, reference, n: int) -> dict:
    """The task's sampled metrics on ``n`` test prompts (GSM8K problems too, for code), with bootstrap intervals;
    fluency is scored under ``reference`` (the original). Smaller than the preset's evaluation: it is run for
    every method, so its intervals are wider."""
    from revrel.models.loading import inference_view
    from revrel.tasks import get_task

    cfg = test_config(task_name, n_prompts=n, n_math=n)
    task = get_task(task_name)
    t0 = time.time()
    m = task.evaluate(inference_view(model, cfg.gen_dtype), tok, task.eval_config(cfg.eval), task.oracle(cfg.reveal.oracle), seed=cfg.seed,
                      reference=None if reference is None else inference_view(reference, cfg.gen_dtype))
    return dict(with_intervals(m), n_prompts=n, seconds=round(time.time() - t0, 1))


def matched_strength(points: list[dict], continuous: bool) -> float:
    """Where to take a method's sampled metrics: the strength at which its TEST utility change reaches the budget
    (interpolated for lambda; for steps, the point closest to it); a method that never reaches it: its strongest point."""
    pts = sorted(points, key=lambda q: q["strength"])
    prev = (0.0, 0.0)
    for q in pts:
        u = q["utility"]["change"]
        if u >= BUDGET:
            if not continuous:
                return q["strength"] if u - BUDGET <= BUDGET - prev[1] else prev[0] or q["strength"]
            return prev[0] + (q["strength"] - prev[0]) * (BUDGET - prev[1]) / (u - prev[1]) if u > prev[1] else q["strength"]
        prev = (q["strength"], u)
    return pts[-1]["strength"]


def score_original(task_name: str, out: Path, n_sampled: int = 0) -> None:
    from revrel.metrics.probes import items_to_json, summarize
    from revrel.models.loading import load_model
    from revrel.pipeline import probe_items
    from revrel.tasks import get_task

    cfg = test_config(task_name)
    task = get_task(task_name)
    loaded = load_model(cfg.model, dtype=cfg.dtype)
    ecfg = task.eval_config(cfg.eval)
    f = out / "original.json"
    res = json.loads(f.read_text()) if f.is_file() else {}  # rerun only for what is missing (the sampled metrics)
    if not res:
        prb, items = probe_items(loaded.model, loaded.tokenizer, task, ecfg)
        res = {"eval": {"split": ecfg.split, "probe_items": ecfg.probe_items}, "probe": summarize(items, prb), "items": items_to_json(items)}
    if n_sampled:
        res["sampled"] = sampled_metrics(task_name, loaded.model, loaded.tokenizer, None, n_sampled)
    f.write_text(json.dumps(res))


def run_method(task_name: str, m: dict, out: Path, n_sampled: int = 0, attacks: tuple[str, ...] = ()) -> None:
    """Rebuild one method at its chosen strengths and score each on the test probe; with ``n_sampled``, also its
    sampled metrics at the strength where its test utility change reaches the budget, and with ``attacks``,
    how much of its target change each model attack takes back there."""
    import copy

    from revrel.io import read_jsonl
    from revrel.models.loading import load_model
    from revrel.tasks import get_task

    rec = ROOT / m["rec"]
    base_cfg = yaml.safe_load((rec / "config.yaml").read_text())
    forget, retain = (read_jsonl(rec / f"{n}.jsonl", allow_empty=True) for n in ("forget", "retain"))
    loaded = load_model(base_cfg["model"], dtype=base_cfg["dtype"])
    score = test_prober(task_name, loaded.tokenizer, out)
    reference = copy.deepcopy(loaded.model) if n_sampled or attacks else None
    need_model = bool(n_sampled or attacks)
    f = out / f"method_{m['slug']}.json"
    prior = json.loads(f.read_text()) if f.is_file() else {}
    known = same_plan(prior, m)  # test points already scored: only the sampled metrics / attacks are missing
    prior = prior if known else {}
    points, t0, states = prior["points"] if known else [], time.time(), {}
    at = matched_strength(points, continuous=m["strength"] == "lambda") if known else None
    if m["strength"] == "steps":
        import tempfile

        from revrel.config import load_config, merge_dicts, parse_set
        from revrel.release.baselines import METHODS
        from revrel.release.checkpoint import RunDir
        from revrel.rounds import Context

        kvs = [f"{k}={v}" for k, v in m["settings"].items() if k != "method"]
        over = parse_set(kvs)
        over.setdefault("release", {}).update(method=m["settings"]["method"], baseline_steps=int(at if known else max(m["strengths"])))
        cfg = load_config(None, merge_dicts(base_cfg, over))
        t_score = 0.0

        def on_step(step: int, model) -> None:
            nonlocal t_score
            if need_model and (step == at if known else step in m["strengths"]):  # which step is sampled is known once all are scored
                states[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if step in m["strengths"] and not known:
                t1 = time.time()
                points.append({"strength": step, **score(model), "train_seconds": round(t1 - t0 - t_score, 1)})
                t_score += time.time() - t1

        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context(loaded=loaded, task=get_task(cfg.task), oracle=None, embed=None, cfg=cfg, run=RunDir(Path(tmp)), on_step=on_step)
            METHODS[m["settings"]["method"]](ctx, forget, retain)
        model = ctx.loaded.model
        at = matched_strength(points, continuous=False)
        if need_model:
            model.load_state_dict(states[at])
    else:
        p = negation_point(rec, base_cfg, [f"{k}={v}" for k, v in m["settings"].items()], loaded, get_task(task_name), forget, retain, {})
        for lam in [] if known else m["strengths"]:
            points.append({"strength": lam, **score(p.sweep.set(lam)), "train_seconds": p.train_seconds})
        at = matched_strength(points, continuous=True)
        model = p.sweep.set(at)
    test_at = at_budget([(q["utility"]["change"], q["target"]["change"]) for q in sorted(points, key=lambda q: q["strength"])], BUDGET)
    res = dict(prior, **m, points=points, test_at_budget=test_at)
    if n_sampled and "sampled" not in prior:
        res.update(sampled_at=at, sampled=sampled_metrics(task_name, model, loaded.tokenizer, reference, n_sampled))
    if attacks:
        res["attacks"] = dict(prior.get("attacks") or {}, **attack_point(task_name, model, loaded, reference, score, at, points,
                                                                        [a for a in attacks if a not in (prior.get("attacks") or {})], out))
    f.write_text(json.dumps(res, indent=1))


def attack_point(task_name: str, model, loaded, reference, score, at: float, points: list[dict], attacks: list[str], out: Path) -> dict:
    """Each model attack on the method's model at its matched strength: the test target change after it and the
    share of the unattacked change it takes back; a quantization is also applied to the original (cached in
    ``original_attacks.json``), and the share is measured from there too, as ``revrel attack`` does."""
    from revrel.commands.attacks import QUANT_ATTACKS, attacked_copy, probe_back
    from revrel.models.loading import LoadedModel
    from revrel.tasks import get_task

    if not attacks:
        return {}
    base = next((q for q in points if q["strength"] == at), None) or score(model)  # an interpolated lambda is scored here
    unl = base["target"]["change"]
    me = LoadedModel(model, loaded.tokenizer, loaded.spec, loaded.source)
    orig_file = out / "original_attacks.json"
    orig = json.loads(orig_file.read_text()) if orig_file.is_file() else {}
    task, res = get_task(task_name), {}
    for name in attacks:
        t0 = time.time()
        rows = task.real_forget(16) if name == "relearn" else None
        ch = score(attacked_copy(name, me, relearn_rows=rows).model)
        r = {"target": ch["target"]["change"], "utility": ch["utility"]["change"], "unattacked_target": unl, "back": probe_back(ch["target"]["change"], unl)}
        if name in QUANT_ATTACKS:
            if name not in orig:
                c0 = score(attacked_copy(name, LoadedModel(reference, loaded.tokenizer, loaded.spec, loaded.source)).model)
                orig[name] = {"target": c0["target"]["change"], "utility": c0["utility"]["change"]}
                orig_file.write_text(json.dumps(orig, indent=1))
            r.update(original_quantized_target=orig[name]["target"], back_vs_quantized=probe_back(ch["target"]["change"], unl, orig[name]["target"]))
        res[name] = dict(r, seconds=round(time.time() - t0, 1))
        print(f"{name}: target {r['target']:+.3f} (unattacked {unl:+.3f}) back {r['back']}", flush=True)
    return res


def preset_point(task: str) -> dict | None:
    d = RES / f"preset_{task}"
    if not (d / "report.json").is_file():
        return None
    rep, run = json.loads((d / "report.json").read_text()), json.loads((d / "run.json").read_text())
    ch = rep["after"]["probes"]["change"]
    return {"family": "revrel preset (full pipeline, test)", "setting": f"configs/{task}.yaml, {len(rep['rounds'])} rounds",
            "target": ch["target"], "utility": ch["utility"], "groups": ch.get("groups"), "wall_s": run.get("wall_s"),
            "peak_rss_GB": run.get("peak_rss_GB"), "resumed": run.get("resumed", False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=["code", "ner", "toxicity"])
    ap.add_argument("--sampled", type=int, default=0, metavar="N",
                    help="also the sampled metrics (N test prompts, bootstrap intervals) of the original and of each method at its matched point")
    ap.add_argument("--attacks", default="", help="model attacks on each method at its matched point, e.g. int8,gguf-q4_1,relearn")
    ap.add_argument("--attack-methods", default="", help="only these method slugs face the attacks (default: all)")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # child: 'original' or a method slug
    args = ap.parse_args()
    out = RES / f"matched_test_{args.task}"
    out.mkdir(parents=True, exist_ok=True)
    methods = plan(args.task, BUDGET)

    def attacks_for(slug: str) -> tuple[str, ...]:
        wanted = [a for a in args.attacks.split(",") if a]
        return tuple(wanted) if not args.attack_methods or slug in args.attack_methods.split(",") else ()

    attacks = attacks_for(args.only or "")
    if args.only == "original":
        score_original(args.task, out, args.sampled)
        return
    if args.only:
        run_method(args.task, next(m for m in methods if m["slug"] == args.only), out, args.sampled, attacks)
        return
    me = [sys.executable, str(Path(__file__).resolve()), "--task", args.task, "--sampled", str(args.sampled), "--attacks", args.attacks,
          "--attack-methods", args.attack_methods, "--only"]
    cost = json.loads((out / "cost.json").read_text()) if (out / "cost.json").is_file() else {}
    plans = {m["slug"]: m for m in methods}
    for slug in ["original"] + list(plans):
        f = out / ("original.json" if slug == "original" else f"method_{slug}.json")
        done = json.loads(f.read_text()) if f.is_file() else None
        if done and slug != "original" and not same_plan(done, plans[slug]):
            done = None  # the dev sweeps now pick another setting or strengths for this method: rebuild it
            cost.pop(slug, None)
        if done and (not args.sampled or "sampled" in done) and (slug == "original" or set(attacks_for(slug)) <= set(done.get("attacks") or {})):
            continue
        print(f"== {time.strftime('%X')} {args.task}: {slug}", flush=True)
        t = timed_run(me + [slug])
        if slug in cost:  # a rerun that only adds sampled metrics or attacks: its time is kept apart
            cost[slug].update(rerun_wall_s=t["wall_s"], peak_rss_GB=max(cost[slug]["peak_rss_GB"] or 0, t["peak_rss_GB"] or 0))
        else:
            cost[slug] = {"wall_s": t["wall_s"], "peak_rss_GB": t["peak_rss_GB"]}
        (out / "cost.json").write_text(json.dumps(cost, indent=1))
    rows = []
    for m in methods:
        r = json.loads((out / f"method_{m['slug']}.json").read_text())
        rows.append(dict(r, **cost.get(m["slug"], {})))
    orig = json.loads((out / "original.json").read_text())
    summary = {"task": args.task, "budget": BUDGET, "probe": orig["eval"], "original": orig["probe"], "original_sampled": orig.get("sampled"), "methods": rows,
               "preset": preset_point(args.task), "original_cost": cost.get("original")}
    (out / "matched.json").write_text(json.dumps(summary, indent=1))
    for r in rows:
        print(f"{r['family']}: test target at +{BUDGET}: {r['test_at_budget']} (dev {r['dev_at_budget']}); points "
              + ", ".join(f"{q['strength']:g}: {q['target']['change']:+.3f}/{q['utility']['change']:+.3f}" for q in r["points"]))


if __name__ == "__main__":
    main()
