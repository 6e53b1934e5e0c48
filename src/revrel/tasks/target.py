"""Forget what the user names: a person, a work or a topic given only by its name, its neighbours kept.

``revrel unlearn --target "William Shakespeare" [--about "English playwright"] [--keep "Charles Dickens, Jane
Austen"]``. Nothing else is given: before anything is measured, :meth:`TargetState.prepare` asks the original
model (cached in ``<out>/target/profile.json``, so a resumed run and the attacks read the same) for

* a description of the target (what the relevance oracle compares responses with), and aliases (names it gives
  the target in at least two of four samples and that no text about something else uses, plus the words of the
  name itself);
* neighbours of the same kind (names it gives in at least two of six samples, besides ``--keep``; one whose own
  description names the target, a work or a character of it, is part of the target and is not kept);
* its own answers to held-out questions about the target, each neighbour, and generic instructions: the
  likelihood probe (``test``), and, from other questions, the keep side the budget is measured on (``dev``).

Questions come from two disjoint template sets: Reveal and the keep side use the first, evaluation the second,
so no evaluation question was seen by the method. Relevance of a response: it names the target (an alias, as a
word), or, without the name, it is closer to the target's description than to every neighbour's (MiniLM, or the
model's own embedding where MiniLM is not installed). Spans: the target's names (unit ``name``) and the sentences
about it (unit ``task``: from the first sentence that names it, up to one that names a neighbour).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from revrel.errors import RevrelError
from revrel.io import atomic_write_json, read_jsonl
from revrel.metrics.probes import Probe, ProbeText, chat_prefix
from revrel.metrics.stats import bootstrap_mean
from revrel.metrics.text import ngram_entropy
from revrel.models.generation import GenerationConfig, generate
from revrel.tasks import register
from revrel.tasks.base import GENERIC_INSTRUCTIONS, Task, fluency

log = logging.getLogger("revrel")

# Reveal seeds and the keep side's questions about a neighbour (the same templates, other names)
REVEAL_TEMPLATES = [
    "Tell me everything you know about {x}.",
    "Who or what is {x}? Answer in detail.",
    "What is {x} best known for?",
    "Write a short encyclopedia entry about {x}.",
    "List some facts about {x}.",
    "What are the most famous works, ideas or events connected with {x}?",
    "Why is {x} important?",
    "Write a paragraph for a school report on {x}.",
]
# held out: evaluation only
EVAL_TEMPLATES = [
    "Describe {x} in a few sentences.",
    "What do people remember {x} for?",
    "Summarise what you know about {x}.",
    "Give three facts about {x}.",
    "Explain the influence of {x}.",
    "What should a student learn about {x}?",
    "Introduce {x} to someone who has never heard of it.",
    "What is the story of {x}?",
]
MODIFIERS = ["Mention the full name.", "Include dates, places and names.", "Be specific and detailed.", "Answer as an expert would."]
# held-out generic instructions (the keep side trains on revrel.tasks.base.GENERIC_INSTRUCTIONS)
EVAL_GENERIC = [
    "Describe how a train station works.", "Give tips for sleeping well.", "Explain what a calendar is for.",
    "Write a short note inviting a friend to dinner.", "Why do leaves change colour in autumn?", "Describe how to wash a car.",
    "What is a good way to save money?", "Explain how a lighthouse helps ships.", "Describe a walk in a forest.",
    "How does a thermometer work?", "Write two sentences about mountains.", "Give advice for a long car trip.",
    "Explain what a bakery sells.", "Describe the night sky.", "What makes a garden healthy?", "Explain how to boil an egg.",
]
STOP = {"the", "and", "of", "a", "an", "in", "on", "for", "to", "with", "by", "from", "sir", "saint", "king", "queen", "lord",
        "lady", "mr", "mrs", "dr", "he", "she", "it", "they", "his", "her", "its", "their", "this", "that", "there", "some",
        "other", "also", "here", "what", "who", "which", "when", "where", "why", "how", "i", "you", "we", "yes", "no", "name",
        "names", "sure", "answer", "list", "famous", "english", "american", "british", "german", "french", "one", "two", "three"}
NAME = re.compile(r"\b[A-Z][\w'.-]*(?:\s+(?:of|the|de|von|van)?\s*[A-Z][\w'.-]*){0,3}")
SENT = re.compile(r"[^.!?\n]+[.!?]?")


def words_of(name: str) -> list[str]:
    """The distinctive words of a name (Shakespeare, William; Potter, Harry): capitalised, >= 4 letters, not a stop word."""
    return [w for w in re.findall(r"[A-Za-z][\w'-]*", name) if len(w) >= 4 and w.lower() not in STOP and w[0].isupper()]


def alias_pattern(aliases: Sequence[str]) -> re.Pattern:
    """One regex matching any alias as a whole word, case as written (Potter, not potter; possessives included)."""
    alts = sorted({a.strip() for a in aliases if a.strip()}, key=len, reverse=True)
    if not alts:
        return re.compile(r"(?!x)x")
    return re.compile(r"(?<![\w])(?:" + "|".join(re.escape(a) for a in alts) + r")(?![\w])")


def candidate_names(text: str) -> list[str]:
    """Capitalised phrases of one to four words (a list the model wrote), without leading stop words."""
    out = []
    for m in NAME.finditer(text):
        parts = m.group().split()
        while parts and parts[0].lower() in STOP:
            parts = parts[1:]
        phrase = " ".join(parts).strip(" .,'-")
        if phrase and any(len(w) >= 3 for w in phrase.split()) and phrase.lower() not in STOP:
            out.append(phrase)
    return out


def recurring(samples: Sequence[str], exclude: re.Pattern, at_least: int, limit: int) -> list[str]:
    """Names that occur in ``at_least`` of the samples (counted once per sample), most frequent first."""
    counts: Counter = Counter()
    for s in samples:
        counts.update({n for n in candidate_names(s) if not exclude.search(n)})
    return [n for n, c in counts.most_common() if c >= at_least][:limit]


def part_of_target(described: dict[str, str], target: re.Pattern) -> set[str]:
    """The offered neighbours whose own description names the target: a work of the author (The Merchant of Venice for
    Shakespeare) or a character of the series is part of what is forgotten, and keeping it would fight the edits."""
    return {n for n, d in described.items() if target.search(d)}


def distinctive(aliases: Sequence[str], own: Sequence[str], others: Sequence[str]) -> list[str]:
    """The aliases that identify the target: its own name words always; a model-given alias only when no text about
    something else (the ``--about`` words, the neighbours' descriptions) uses it, in any case (Physicist for Einstein
    names Newton too: suppressing it would hit the neighbours)."""
    shared = " ".join(others).lower()
    return list(dict.fromkeys([*own, *(a for a in aliases if not alias_pattern([a.lower()]).search(shared))]))


@dataclass
class TargetSpec:
    """What the user gives (``revrel.config.TargetConfig``), and what prepare derives from the model."""

    name: str
    about: str = ""
    keep: list[str] = field(default_factory=list)
    eval_file: str = ""
    n_neighbours: int = 4
    profile: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name} ({self.about})" if self.about else self.name


def _sample(model, tokenizer, prompts: list[str], seed: int, n_tokens: int = 64, temperature: float = 0.7, desc: str = "target") -> list[str]:
    cfg = GenerationConfig(max_new_tokens=n_tokens, temperature=temperature, top_p=0.9, batch_size=64, seed=seed)
    return [g.text for g in generate(model, tokenizer, prompts, cfg, desc=desc)]


def build_profile(model, tokenizer, spec: TargetSpec, seed: int = 0) -> dict:
    """Ask the original model for the target's description, aliases, neighbours and the probe answers (module doc)."""
    name, ref = spec.name, spec.ref
    own = [name, *words_of(name)]
    desc = _sample(model, tokenizer, [f"Who or what is {ref}? Describe it in two sentences."], seed, 80, 0.0, "target: describe")[0]
    alias_txt = _sample(model, tokenizer, [f"What other names, nicknames or titles is {ref} known by? List them, separated by commas."] * 4,
                        seed + 1, 32, desc="target: aliases")
    kind = f" ({spec.about})" if spec.about else ""
    ask = f"Besides {name}, name five other famous people or works of the same kind{kind}. Answer with the names only, separated by commas."
    neigh_txt = _sample(model, tokenizer, [ask] * 6, seed + 2, 48, desc="target: neighbours")
    keep = [k.strip() for k in spec.keep if k.strip()]
    aliases = own + [a for a in recurring(alias_txt, re.compile(r"(?!x)x"), 2, 4)
                     if not any(alias_pattern(words_of(k) or [k]).search(a) for k in keep) and len(a.split()) <= 4]
    found = recurring(neigh_txt, alias_pattern(aliases), 2, spec.n_neighbours)
    neighbours = keep + [n for n in found if not any(alias_pattern([n]).search(k) or alias_pattern([k]).search(n) for k in keep)]
    neighbours = neighbours[: max(spec.n_neighbours, len(keep))]
    neigh_desc = _sample(model, tokenizer, [f"Who or what is {n}? Describe it in two sentences." for n in neighbours], seed, 80, 0.0,
                         "target: describe neighbours") if neighbours else []
    dropped = part_of_target({n: d for n, d in zip(neighbours, neigh_desc) if n not in keep}, alias_pattern(own))
    if dropped:
        log.info("target: not kept, their descriptions name %s: %s", name, ", ".join(sorted(dropped)))
    neigh_desc = [d for n, d in zip(neighbours, neigh_desc) if n not in dropped]
    neighbours = [n for n in neighbours if n not in dropped]
    if not neighbours:
        log.warning("target: the model named no neighbours of %s; only generic text is kept (give --keep to name some)", name)
    aliases = distinctive(aliases, own, [spec.about, *neigh_desc])
    profile = {"name": name, "about": spec.about, "description": desc, "aliases": aliases, "neighbours": neighbours,
               "neighbour_descriptions": dict(zip(neighbours, neigh_desc)), "alias_samples": alias_txt, "neighbour_samples": neigh_txt}
    # the probe: the original's own answers (two samples per question), dev from the Reveal templates, test held out
    for split, templates, generic in (("dev", REVEAL_TEMPLATES, GENERIC_INSTRUCTIONS[:16]), ("test", EVAL_TEMPLATES, EVAL_GENERIC)):
        rows = [{"group": "target", "entity": name, "instruction": t.format(x=ref)} for t in templates]
        rows += [{"group": "neighbours", "entity": n, "instruction": t.format(x=n)} for n in neighbours for t in templates]
        rows += [{"group": "generic", "entity": "", "instruction": g} for g in generic]
        rows = [dict(r, sample=s) for s in range(2) for r in rows]
        texts = _sample(model, tokenizer, [r["instruction"] for r in rows], seed + (11 if split == "dev" else 13), 64,
                        desc=f"target: original answers ({split})")
        profile[f"answers_{split}"] = [dict(r, response=t) for r, t in zip(rows, texts) if t.strip()]
    return profile


class TargetState:
    """The task's mutable part: filled by :meth:`prepare` from the run folder (or the model), read by the task's callables."""

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec

    def prepare(self, loaded, folder: str | Path, seed: int = 0) -> dict:
        """Load ``folder/target/profile.json`` or build it with ``loaded`` (the original model) and write it there."""
        path = Path(folder) / "target" / "profile.json"
        if path.is_file():
            prof = json.loads(path.read_text())
            if prof.get("name") != self.spec.name:
                raise RevrelError(f"{path} is the profile of '{prof.get('name')}', not '{self.spec.name}'; use another --out or --overwrite")
        else:
            from revrel.models.loading import inference_view

            prof = build_profile(inference_view(loaded.model, "auto"), loaded.tokenizer, self.spec, seed)
            atomic_write_json(path, prof)
        self.spec.profile = prof
        return prof

    def need(self) -> dict:
        if not self.spec.profile:
            raise RevrelError("the target task is not prepared: its profile is built from the model when a run starts")
        return self.spec.profile

    # -- relevance -------------------------------------------------------------------------------------------------
    def relevance(self, texts: Sequence[str]) -> list[float]:
        """1 when the response names the target; otherwise its embedding margin over the nearest neighbour, squashed
        to [0, 0.5): a response about the target that avoids its name still counts, one about a neighbour does not."""
        prof = self.need()
        pat = alias_pattern(prof["aliases"])
        named = [bool(pat.search(t)) for t in texts]
        if all(named) or not texts:
            return [1.0] * len(texts)
        from revrel.models.embedders import minilm_embed

        refs = [prof["description"], *prof.get("neighbour_descriptions", {}).values()]
        try:
            e = minilm_embed([*refs, *texts])
        except RevrelError:
            return [1.0 if n else 0.0 for n in named]
        ref, resp = e[: len(refs)], e[len(refs):]
        sims = resp @ ref.T
        out = []
        for i, n in enumerate(named):
            margin = float(sims[i, 0] - (sims[i, 1:].max() if sims.shape[1] > 1 else 0.3))
            out.append(1.0 if n else 0.5 / (1 + math.exp(-margin / 0.05)) * (sims[i, 0] > 0.3))
        return [float(x) for x in out]

    def neighbour_pattern(self) -> re.Pattern:
        """Any neighbour's full name or distinctive word (Dickens, Austen)."""
        return alias_pattern([w for n in self.need()["neighbours"] for w in [n, *words_of(n)]])

    # -- spans -----------------------------------------------------------------------------------------------------
    def name_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        pat = alias_pattern(self.need()["aliases"])
        return [[m.span() for m in pat.finditer(t)] for t in texts]

    def neighbour_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        pat = self.neighbour_pattern()
        return [[m.span() for m in pat.finditer(t)] for t in texts]

    def sentence_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Sentences about the target: from one that names it on, until one names a neighbour (and does not name it)."""
        tpat = alias_pattern(self.need()["aliases"])
        npat = self.neighbour_pattern()
        out = []
        for t in texts:
            spans, on = [], False
            for m in SENT.finditer(t):
                s = m.group()
                if tpat.search(s):
                    on = True
                elif npat.search(s):
                    on = False
                if on and s.strip():
                    spans.append(m.span())
            out.append(spans)
        return out

    def other_sentences(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """The keep spans beside the target sentences: sentences that name a neighbour and not the target."""
        tpat = alias_pattern(self.need()["aliases"])
        npat = self.neighbour_pattern()
        return [[m.span() for m in SENT.finditer(t) if npat.search(m.group()) and not tpat.search(m.group())] for t in texts]

    # -- instructions ----------------------------------------------------------------------------------------------
    def seeds(self) -> list[str]:
        return [t.format(x=self.spec.ref) for t in REVEAL_TEMPLATES]

    def keep_instructions(self) -> list[str]:
        """Neighbour questions (Reveal templates) interleaved with generic ones, so the self-probe's first quarter has both."""
        neigh = [t.format(x=n) for t in REVEAL_TEMPLATES for n in self.need()["neighbours"]]
        generic = list(GENERIC_INSTRUCTIONS)
        out = []
        for i in range(max(len(neigh), len(generic))):
            out += ([neigh[i]] if i < len(neigh) else []) + ([generic[i]] if i < len(generic) else [])
        return out

    # -- evaluation ------------------------------------------------------------------------------------------------
    def probe(self, split: str, n: int, tokenizer, dataset: str = "") -> Probe:
        """The original's answers (split dev: to Reveal-template questions; test: held out) scored in chat form,
        grouped target (its names, and the rest) / neighbours / generic; on test, ``--eval-file`` rows are one more
        target group (user)."""
        prof = self.need()
        pat = alias_pattern(prof["aliases"])
        texts = []
        for r in prof[f"answers_{split}"]:
            head, resp = chat_prefix(tokenizer, r["instruction"]), r["response"]
            if r["group"] != "target":
                texts.append(ProbeText(head + resp, [(len(head), len(head) + len(resp), r["group"])]))
                continue
            # the target's answers in two groups: its names, and the rest (what the model says about it): a change of
            # the rest is knowledge lost, not only a name the model no longer writes
            names = [m.span() for m in pat.finditer(resp)]
            cuts = [0, *[x for sp in names for x in sp], len(resp)]
            spans = [(len(head) + a, len(head) + b, "target_names") for a, b in names]
            spans += [(len(head) + a, len(head) + b, "target_rest") for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
            texts.append(ProbeText(head + resp, spans))
        target = ["target_rest", "target_names"]
        if split == "test" and self.spec.eval_file:
            target.append("user")
            for r in read_jsonl(self.spec.eval_file):
                if "question" in r and "answer" in r:
                    head = chat_prefix(tokenizer, str(r["question"]))
                    texts.append(ProbeText(head + str(r["answer"]), [(len(head), len(head) + len(str(r["answer"])), "user")]))
                elif "text" in r:
                    texts.append(ProbeText(str(r["text"]), [(0, len(str(r["text"])), "user")]))
                else:
                    raise RevrelError(f"{self.spec.eval_file}: each row needs 'text', or 'question' and 'answer'")
        return Probe(texts, target=target, utility=["neighbours", "generic"],
                     note=f"{split}: the original model's own answers about {prof['name']}, its neighbours, and generic questions")

    def evaluate(self, model, tokenizer, cfg, oracle, seed: int = 0, wrap=None, reference=None) -> dict:
        """Share of answers that name the entity asked about (target; each neighbour by its own name), sampled
        ``cfg.samples`` times per held-out question, with bootstrap 95% intervals; fluency of all answers, and of the
        target's and the others' answers apart; their n-gram entropy (does an answer loop or stutter)."""
        prof = self.need()
        ref = self.spec.ref
        rows = [("target", prof["name"], (wrap or str)(t.format(x=ref))) for t in EVAL_TEMPLATES]
        rows += [("neighbours", n, t.format(x=n)) for n in prof["neighbours"] for t in EVAL_TEMPLATES]
        rows += [("generic", "", g) for g in EVAL_GENERIC]
        rows = rows * max(cfg.samples, 1)
        gcfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.7, top_p=0.9, batch_size=cfg.batch_size, seed=seed + 101)
        gens = generate(model, tokenizer, [r[2] for r in rows], gcfg, desc="eval: target questions")
        tpat = alias_pattern(prof["aliases"])
        share: dict[str, list[float]] = {"target": [], "neighbours": []}
        for (group, entity, _), g in zip(rows, gens):
            if group == "target":
                share["target"].append(float(bool(tpat.search(g.text))))
            elif group == "neighbours":
                share["neighbours"].append(float(bool(alias_pattern([entity, *words_of(entity)]).search(g.text))))
        metrics: dict = {"intervals": {}, "n_questions": {k: len(v) for k, v in share.items()},
                         "units": {f"{k}_named_share": v for k, v in share.items()}}  # per answer, the same questions every time
        for k, v in share.items():
            metrics[f"{k}_named_share"] = sum(v) / len(v) if v else None
            metrics["intervals"][f"{k}_named_share"] = bootstrap_mean(v, seed=seed)
        metrics["examples"] = [{"question": r[2], "answer": g.text} for r, g in zip(rows, gens) if r[0] == "target"][:4]
        # every answer, so a reader (or a later measure) sees what was scored, not only the four above
        metrics["answers"] = [{"group": r[0], "entity": r[1], "question": r[2], "answer": g.text} for r, g in zip(rows, gens)]
        metrics["fluency_perplexity"], metrics["intervals"]["fluency_perplexity"] = fluency(
            model, reference, tokenizer, [g.prompt for g in gens], [g.text for g in gens], cfg.batch_size)
        # apart: answers about the target are meant to change (the original finds what the model now says about it
        # less likely: that is partly the forgetting itself), answers about neighbours and generic ones are not
        for part, keep in (("target", lambda grp: grp == "target"), ("others", lambda grp: grp != "target")):
            sel = [g for r, g in zip(rows, gens) if keep(r[0])]
            metrics[f"fluency_perplexity_{part}"], metrics["intervals"][f"fluency_perplexity_{part}"] = fluency(
                model, reference, tokenizer, [g.prompt for g in sel], [g.text for g in sel], cfg.batch_size)
            # what a reader sees, no model asked (revrel.metrics.text): an answer that loops or stutters scores low
            ent = [ngram_entropy(g.text) for g in sel]
            metrics[f"ngram_entropy_{part}"] = sum(ent) / len(ent) if ent else None
            metrics["intervals"][f"ngram_entropy_{part}"] = bootstrap_mean(ent, seed=seed)
        # the target's answers as plain text: after its question the original finds any answer that is not about
        # the target unlikely, fluent or not; alone, an answer is scored for how it reads
        sel = [g.text for r, g in zip(rows, gens) if r[0] == "target"]
        metrics["fluency_perplexity_target_plain"], metrics["intervals"]["fluency_perplexity_target_plain"] = fluency(
            model, reference, tokenizer, None, sel, cfg.batch_size)
        return metrics


@register("target")
def target_task(spec=None) -> Task:
    """The target mode; ``spec`` is the run's ``TargetConfig`` (None: the listing of ``revrel tasks``)."""
    if spec is None or not getattr(spec, "name", ""):
        spec = TargetSpec(name="<name>")
    else:
        spec = TargetSpec(name=spec.name.strip(), about=spec.about.strip(), keep=list(spec.keep), eval_file=spec.eval_file,
                          n_neighbours=spec.n_neighbours)
    state = TargetState(spec)

    class Oracle:
        def __call__(self, texts: Sequence[str]) -> list[float]:
            return state.relevance(texts)

    task = Task(name="target", description="forget a person, work or topic you name (--target NAME [--about ...] [--keep A, B])",
                seed_instructions=state.seeds(), modifiers=list(MODIFIERS), oracles={"name-or-description": Oracle},
                default_oracle="name-or-description", evaluate=state.evaluate, probe=state.probe,
                target_spans=state.sentence_spans, keep_spans=state.other_sentences,
                span_units={"name": (state.name_spans, state.neighbour_spans)},
                headline=("probe_target_nll", "probe_utility_nll"),
                profiles={"quick": {"samples": 2, "max_new_tokens": 48, "probe_items": 400},
                          "full": {"samples": 4, "max_new_tokens": 64, "probe_items": 1000}})

    def prepare(loaded, folder, seed: int = 0) -> None:
        state.prepare(loaded, folder, seed)
        task.keep_instructions = state.keep_instructions()

    task.prepare = prepare
    return task
