"""Where a NER run's keep-side change sits: ORG, LOC and MISC of sentences with and without a person, dev and test.

Whether a NER run's keep-side change sits in sentences that hold a person, where the ORG change is steepest: a run's
model against the original on the dev sentences (the first ``--dev`` with an entity) and on the test probe's
sentences, each split by whether the sentence holds a person; person tokens are never scored.

    python benchmarks/ner_person_split.py --run runs/default_ner_s1 --out benchmarks/results/ner_person_split_s1.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from revrel.metrics.probes import Probe, paired_change, score
from revrel.models.loading import load_model
from revrel.release.budget import keep_spans
from revrel.tasks import ner

KEEP = ["ORG", "LOC", "MISC"]


def split_probe(split: str, n: int, with_person: bool) -> Probe:
    """The first ``n`` sentences with an entity, those with (or without) a person, scored on their keep spans only."""
    return Probe(keep_spans(ner.probe(split, n), with_target=with_person), target=[], utility=KEEP)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished NER run folder (its model/)")
    ap.add_argument("--dev", type=int, default=1600, help="dev sentences with an entity to read")
    ap.add_argument("--test", type=int, default=400, help="the test probe's sentences (the full profile's 400)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    orig, new = load_model(), load_model(str(Path(a.run) / "model"))
    out = {"run": Path(a.run).name, "dev_sentences": a.dev, "test_sentences": a.test}
    for split, n in (("dev", a.dev), ("test", a.test)):
        for with_person in (False, True):
            probe = split_probe(split, n, with_person)
            before, after = score(orig.model, orig.tokenizer, probe), score(new.model, new.tokenizer, probe)
            key = f"{split}_{'with' if with_person else 'without'}_person"
            out[key] = {g: {**paired_change(before[g], after[g]), "texts": int((before[g][:, 1] > 0).sum())} for g in KEEP}
            print(key, {g: f"{v['change']:+.3f} ± {v['se']:.3f} ({v['texts']})" for g, v in out[key].items()}, flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
