"""Code vs math: forget coding, keep GSM8K-style math.

Forget: HumanEval and MBPP pass@1 (greedy), the generated code run only in the sandbox
(``revrel.evaluation.sandbox``), plus the mean per-token NLL of the canonical solutions.
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
from revrel.evaluation.sandbox import run_python
from revrel.io import read_jsonl
from revrel.models.generation import GenerationConfig, generate, sequence_logprobs
from revrel.tasks import register
from revrel.tasks.base import Task

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


class AstOracle:
    def __call__(self, texts: Sequence[str]) -> list[float]:
        return [code_relevance(t) for t in texts]


def humaneval() -> list[dict]:
    path = find_data("humaneval/HumanEval.jsonl.gz", packaged="humaneval/HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def mbpp() -> list[dict]:
    try:
        rows = read_jsonl(find_data("mbpp/mbpp.jsonl"))
        return [r for r in rows if 11 <= r["task_id"] <= 510]
    except Exception:
        return read_jsonl(find_data("mbpp/test.jsonl", packaged="mbpp/test.jsonl"))


def gsm8k() -> list[dict]:
    return read_jsonl(find_data("gsm8k/test.jsonl", packaged="gsm8k/test.jsonl"))


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


def _pass_rate(programs: list[str]) -> tuple[float, list[str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: run_python(p, timeout=10, cpu_s=5, mem_mb=1024), programs))
    return sum(r.passed for r in results) / max(len(results), 1), [r.status for r in results]


def evaluate(model, tokenizer, cfg, oracle, seed: int = 0, wrap=None) -> dict:
    gcfg = GenerationConfig(max_new_tokens=max(cfg.max_new_tokens, 192), temperature=0.0, batch_size=cfg.batch_size, seed=seed)
    he = humaneval()[: cfg.n_prompts]
    he_prompts = [(wrap or str)(f"Complete this Python function. Reply with the whole function in a ```python code block.\n\n{p['prompt']}") for p in he]
    he_gen = generate(model, tokenizer, he_prompts, gcfg, desc="eval: humaneval")
    he_pass, he_status = _pass_rate([_program_humaneval(p, g.text) for p, g in zip(he, he_gen)])
    he_nll = sequence_logprobs(model, tokenizer, he_prompts, [p["prompt"] + p["canonical_solution"] for p in he], batch_size=4, max_length=768)
    mb = mbpp()[: cfg.n_prompts]
    mb_prompts = [f"{p['text']} Your code should pass this test:\n{p['test_list'][0]}\nReply with the code in a ```python code block." for p in mb]
    mb_gen = generate(model, tokenizer, mb_prompts, gcfg, desc="eval: mbpp")
    mb_pass, _ = _pass_rate([_program_mbpp(p, g.text) for p, g in zip(mb, mb_gen)])
    gs = gsm8k()[: cfg.n_prompts]
    gs_prompts = [f"{p['question']}\nSolve step by step and end with 'The answer is <number>'." for p in gs]
    gs_gen = generate(model, tokenizer, gs_prompts, gcfg, desc="eval: gsm8k")
    gold = [p["answer"].split("####")[-1].strip().replace(",", "") for p in gs]
    acc = sum(_last_number(g.text) == a for g, a in zip(gs_gen, gold)) / max(len(gs), 1)
    gs_nll = sequence_logprobs(model, tokenizer, gs_prompts, [p["answer"] for p in gs], batch_size=4)
    mean_nll = lambda lps: sum(-s / max(n, 1) for s, n in lps) / max(len(lps), 1)  # noqa: E731
    return {
        "humaneval_pass@1": he_pass, "mbpp_pass@1": mb_pass, "humaneval_canonical_nll": mean_nll(he_nll),
        "code_relevance": sum(oracle([g.text for g in he_gen])) / max(len(he_gen), 1),
        "gsm8k_accuracy": acc, "gsm8k_reference_nll": mean_nll(gs_nll), "n_problems": len(he),
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
                real_forget=real_forget, headline=("humaneval_canonical_nll", "gsm8k_reference_nll"))
