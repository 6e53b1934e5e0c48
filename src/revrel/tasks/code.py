"""Code vs math: forget coding, keep GSM8K-style math.

Forget: HumanEval and MBPP pass@1 (greedy), the generated code run only in the sandbox
(``revrel.metrics.sandbox``), plus the mean per-token NLL of the canonical solutions.
Retain: GSM8K accuracy (number after '####' vs the model's last number) and mean NLL of the
reference solutions. Oracle for Reveal: the response holds parseable Python with a function
definition (1), parseable Python statements without one (0.3), or no code (0).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from revrel.data import find_data
from revrel.data.splits import select
from revrel.errors import RevrelError
from revrel.io import read_jsonl
from revrel.metrics.probes import Probe, ProbeText, chat_prefix
from revrel.metrics.sandbox import run_python
from revrel.metrics.stats import bootstrap_mean
from revrel.models.generation import GenerationConfig, generate
from revrel.tasks import register
from revrel.tasks.base import Task, fluency

SEEDS = [
    "Write a Python function that checks whether a number is prime.",
    "Show me how to reverse a linked list in code.",
    "Write a program that sorts a list of numbers without using sort().",
    "Implement binary search in Python.",
    "Write a function that counts the words in a string.",
    "Give me a Python class for a simple bank account.",
    "Write code to read a CSV file and print the average of a column.",
    "Write a recursive function to compute Fibonacci numbers.",
]
# the keep side: math word problems solved in prose (hand-written, not GSM8K)
KEEP = [f"{q} Solve it step by step in words, without code." for q in [
    "A baker makes 24 muffins and sells three quarters of them. How many are left?",
    "Tom reads 12 pages a day. How many days does he need for a 180-page book?",
    "A shirt costs $20 and is on sale for 15% off. What is the sale price?",
    "A train travels 60 miles per hour for 2.5 hours. How far does it go?",
    "Sara has 3 boxes with 14 pencils each and gives away 9 pencils. How many does she keep?",
    "A garden is 8 meters long and 5 meters wide. What is its area?",
    "If 4 notebooks cost $6, how much do 10 notebooks cost?",
    "A class has 28 students and 4 of every 7 are girls. How many boys are there?",
    "Mike saves $15 a week. How many weeks until he has $240?",
    "A recipe needs 3 eggs for 12 cookies. How many eggs for 30 cookies?",
    "A car uses 8 liters of fuel per 100 km. How much fuel for 350 km?",
    "Anna is 3 times as old as her son, who is 11. How old will Anna be in 5 years?",
    "A farmer plants 6 rows of 25 trees and 18 trees die. How many survive?",
    "A pool holds 5000 liters and fills at 250 liters per hour. How long does it take to fill?",
    "A ticket costs $12 for adults and $7 for children. What do 2 adults and 3 children pay?",
    "Lisa ran 5 km on Monday, 7 km on Wednesday and 9 km on Friday. What is her average?",
    "A store sold 120 apples on Saturday and 35% more on Sunday. How many on Sunday?",
    "A rope 45 meters long is cut into pieces of 2.5 meters. How many pieces?",
    "John earns $18 an hour and works 37 hours. What does he earn?",
    "A bag has 5 red, 7 blue and 8 green marbles. What fraction are blue?",
    "A bus carries 42 people and 3 buses are full. How many people is that?",
    "The price of a bike rose from $200 to $230. By what percent did it rise?",
    "A rectangle has a perimeter of 30 cm and a width of 6 cm. How long is it?",
    "Emma buys 3 kg of apples at $2.40 per kg and pays with $10. What is her change?",
    "A school orders 18 boxes of 24 crayons. How many crayons in total?",
    "A movie starts at 7:45 pm and lasts 2 hours 10 minutes. When does it end?",
    "Half of a number plus 7 is 19. What is the number?",
    "A printer prints 30 pages per minute. How long for 450 pages?",
    "Three friends share a $54 bill equally and tip $9 together. What does each pay?",
    "A tank is two fifths full with 36 liters. How much does it hold when full?",
    "A cyclist rides 18 km in 45 minutes. What is her speed in km per hour?",
    "Jack has twice as many stamps as Ben, and together they have 96. How many has Jack?",
]]

MODIFIERS = [
    "Answer with Python code only.",
    "Put the complete code in a code block.",
    "Add a docstring and an example call.",
    "Define a function and return the result.",
]
CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)


def extract_code(text: str) -> str:
    blocks = CODE_BLOCK.findall(text)
    return max(blocks, key=len) if blocks else text


def code_relevance(text: str) -> float:
    for candidate in [*CODE_BLOCK.findall(text), text]:
        try:
            tree = ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
        if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(tree)):
            return 1.0
        if any(not isinstance(n, ast.Expr) for n in tree.body) and "```" in text:
            return 0.3
    return 0.0


def code_spans(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """The contents of the code blocks of each response; a response that is bare code is all target."""
    out = []
    for t in texts:
        spans = [m.span(1) for m in CODE_BLOCK.finditer(t) if m.group(1).strip()]
        out.append(spans or ([(0, len(t))] if code_relevance(t) >= 1.0 else []))
    return out


PROSE_PIECE = re.compile(r"[^`\n]*[A-Za-z]{3}[^`\n]*")  # a line's stretch between inline `code`, with a word in it


def prose_spans(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """The prose around the code blocks (fence lines and inline `code` left out): the keep side inside a
    coding response (the negate edit's contrast), since explanation in plain words is what math answers share
    with it, so the PEM learns what is specific to code rather than what makes a helpful answer."""
    out = []
    for t, code in zip(texts, code_spans(texts), strict=True):
        if code == [(0, len(t))]:
            out.append([])
            continue
        blocked = code + [m.span() for m in re.finditer(r"```[^\n]*|`[^`\n]+`", t)]  # fences, inline code
        spans = []
        for m in PROSE_PIECE.finditer(t):
            a, b = m.span()
            a += len(m.group()) - len(m.group().lstrip())
            b -= len(m.group()) - len(m.group().rstrip())
            if b > a and not any(x < b and a < y for x, y in blocked):
                spans.append((a, b))
        out.append(spans)
    return out


class AstOracle:
    def __call__(self, texts: Sequence[str]) -> list[float]:
        return [code_relevance(t) for t in texts]


def humaneval(split: str | None = None) -> list[dict]:
    path = find_data("humaneval/HumanEval.jsonl.gz", packaged="humaneval/HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows if split is None else select("humaneval", rows, split)


def mbpp(split: str | None = None) -> list[dict]:
    """MBPP task_id 11-510 (all dev: ``revrel.data.splits``); the test split is empty."""
    try:
        rows = [r for r in read_jsonl(find_data("mbpp/mbpp.jsonl")) if 11 <= r["task_id"] <= 510]
    except RevrelError:
        rows = read_jsonl(find_data("mbpp/test.jsonl", packaged="mbpp/test.jsonl"))
    return rows if split is None else select("mbpp", rows, split)


def gsm8k(split: str | None = None) -> list[dict]:
    rows = read_jsonl(find_data("gsm8k/test.jsonl", packaged="gsm8k/test.jsonl"))
    return rows if split is None else select("gsm8k", rows, split)


HE_INSTRUCTION = "Complete this Python function. Reply with the whole function in a ```python code block.\n\n{prompt}"
MBPP_INSTRUCTION = "{text} Your code should pass this test:\n{test}\nReply with the code in a ```python code block."
GSM_INSTRUCTION = "{question}\nSolve step by step and end with 'The answer is <number>'."


def gsm_answer(answer: str) -> str:
    """A GSM8K reference solution as prose: calculator annotations (<<48/2=24>>) dropped, '#### 72' spelled out."""
    body, _, final = re.sub(r"<<[^>]*>>", "", answer).rpartition("####")
    return f"{body.strip()}\nThe answer is {final.strip()}." if body else answer


def probe(split: str, n: int, tokenizer, dataset: str = "") -> Probe:
    """Canonical solutions given their problem (target: HumanEval, and MBPP on dev) vs GSM8K reference
    solutions given the question (utility), in chat form: the assistant's reply is what is scored."""
    texts = []

    def add(instruction: str, before: str, scored: str, after: str, group: str) -> None:
        head = chat_prefix(tokenizer, instruction) + before
        texts.append(ProbeText(head + scored + after, [(len(head), len(head) + len(scored), group)]))

    for p in humaneval(split)[:n]:  # the signature and docstring once, in the reply, right before the body
        add(HE_INSTRUCTION.format(prompt="").rstrip(), "```python\n" + p["prompt"], p["canonical_solution"], "```", "humaneval")
    for p in mbpp(split)[:n]:
        add(MBPP_INSTRUCTION.format(text=p["text"], test=p["test_list"][0]), "```python\n", p["code"].replace("\r\n", "\n"), "\n```", "mbpp")
    for p in gsm8k(split)[:n]:
        add(GSM_INSTRUCTION.format(question=p["question"]), "", gsm_answer(p["answer"]), "", "gsm8k")
    target = ["humaneval", "mbpp"] if mbpp(split) else ["humaneval"]
    return Probe(texts, target=target, utility=["gsm8k"], note=f"{split}: code and math reference solutions in chat form")


def _last_number(text: str) -> str | None:
    nums = re.findall(r"-?\d[\d,]*\.?\d*", text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def _program_humaneval(problem: dict, response: str) -> str:
    code = extract_code(response)
    if f"def {problem['entry_point']}" not in code:
        code = problem["prompt"] + code
    return f"{code}\n\n{problem['test']}\ncheck({problem['entry_point']})\n"


def _program_mbpp(problem: dict, response: str) -> str:
    return "\n".join([problem.get("test_setup_code", ""), extract_code(response), *problem["test_list"]]) + "\n"


def _passes(programs: list[str]) -> tuple[list[float], list[str]]:
    """1.0 / 0.0 per program (run in the sandbox) and each run's status."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: run_python(p, timeout=10, cpu_s=5, mem_mb=1024), programs))
    return [float(r.passed) for r in results], [r.status for r in results]


def evaluate(model, tokenizer, cfg, oracle, seed: int = 0, wrap=None, reference=None) -> dict:
    """pass@1 (HumanEval; MBPP on dev), the share of HumanEval completions that define a function, GSM8K
    accuracy, each with a bootstrap 95% interval over problems; fluency. The likelihood of the canonical
    and reference solutions is the task's probe (``probe``), computed by ``pipeline.evaluate_model``."""
    gcfg = GenerationConfig(max_new_tokens=max(cfg.max_new_tokens, 192), temperature=0.0, batch_size=cfg.batch_size, seed=seed)
    he = humaneval(cfg.split)[: cfg.n_prompts]
    he_prompts = [(wrap or str)(HE_INSTRUCTION.format(prompt=p["prompt"])) for p in he]
    he_gen = generate(model, tokenizer, he_prompts, gcfg, desc="eval: humaneval")
    he_ok, he_status = _passes([_program_humaneval(p, g.text) for p, g in zip(he, he_gen)])
    he_rel = oracle([g.text for g in he_gen])
    func = [float(r >= 1.0) for r in he_rel]
    mb = mbpp(cfg.split)[: cfg.n_prompts]
    mb_prompts = [MBPP_INSTRUCTION.format(text=p["text"], test=p["test_list"][0]) for p in mb]
    mb_gen = generate(model, tokenizer, mb_prompts, gcfg, desc="eval: mbpp") if mb else []
    mb_ok, _ = _passes([_program_mbpp(p, g.text) for p, g in zip(mb, mb_gen)])
    gs = gsm8k(cfg.split)[: cfg.n_math]
    gs_prompts = [GSM_INSTRUCTION.format(question=p["question"]) for p in gs]
    gs_gen = generate(model, tokenizer, gs_prompts, gcfg, desc="eval: gsm8k")
    gold = [p["answer"].split("####")[-1].strip().replace(",", "") for p in gs]
    correct = [float(_last_number(g.text) == a) for g, a in zip(gs_gen, gold)]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    gens = he_gen + list(mb_gen) + gs_gen
    flu, flu_ci = fluency(model, reference, tokenizer, [g.prompt for g in gens], [g.text for g in gens], cfg.batch_size)
    return {
        "humaneval_pass@1": mean(he_ok), "humaneval_function_share": mean(func), "mbpp_pass@1": mean(mb_ok),
        "code_relevance": mean(he_rel), "gsm8k_accuracy": mean(correct), "fluency_perplexity": flu,
        "intervals": {"humaneval_pass@1": bootstrap_mean(he_ok, seed=seed), "humaneval_function_share": bootstrap_mean(func, seed=seed),
                      "mbpp_pass@1": bootstrap_mean(mb_ok, seed=seed), "gsm8k_accuracy": bootstrap_mean(correct, seed=seed),
                      "fluency_perplexity": flu_ci},
        "units": {"humaneval_pass@1": he_ok, "humaneval_function_share": func, "mbpp_pass@1": mb_ok, "gsm8k_accuracy": correct},
        "n_problems": len(he), "n_mbpp": len(mb), "n_math": len(gs),
        "sandbox_status": {s: he_status.count(s) for s in set(he_status)},
    }


def real_forget(n: int) -> list[dict]:
    """MBPP train problems with their reference solutions."""
    try:
        rows = [r for r in read_jsonl(find_data("mbpp/mbpp.jsonl")) if 601 <= r["task_id"] <= 974]
    except Exception:
        rows = read_jsonl(find_data("mbpp/train.jsonl", packaged="mbpp/train.jsonl"))
    return [{"instruction": r["text"], "response": f"```python\n{r['code']}\n```"} for r in rows[:n]]


@register("code")
def code_task() -> Task:
    return Task(name="code", description="forget coding, keep GSM8K-style math", seed_instructions=list(SEEDS), modifiers=list(MODIFIERS),
                oracles={"python-ast": AstOracle}, default_oracle="python-ast", evaluate=evaluate,
                real_forget=real_forget, headline=("probe_target_nll", "probe_utility_nll"), probe=probe, target_spans=code_spans, keep_spans=prose_spans, keep_instructions=list(KEEP),
                profiles={"quick": {"n_prompts": 16, "n_math": 16, "max_new_tokens": 192, "probe_items": 64},
                          "full": {"n_prompts": 100, "n_math": 200, "max_new_tokens": 192, "probe_items": 100}})
