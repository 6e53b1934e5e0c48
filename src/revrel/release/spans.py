"""Target spans of the revealed rows: which characters of a response make it the target (a task's own spans, or
another unit it declares, e.g. toxicity's profane words), and optionally the keep spans beside them."""

from __future__ import annotations

from revrel.errors import RevrelError


def span_fns(task, unit: str = "task") -> tuple:
    """(target spans, keep spans) functions of a span unit: the task's own for "task", else ``Task.span_units``'s."""
    if unit == "task":
        return task.target_spans, task.keep_spans
    if unit not in task.span_units:
        have = ", ".join(["task", *task.span_units])
        raise RevrelError(f"unit={unit}: task '{task.name}' declares the units {have}")
    return task.span_units[unit]


def with_target_spans(task, rows: list[dict], keep: bool = False, unit: str = "task") -> tuple[list[dict], dict]:
    """The forget rows with the task's target spans attached (rows without any span are dropped), and with
    ``keep`` the spans of what must be kept in the same text (``Task.keep_spans``, for the negate edit's contrast
    and ``release.keep_side``). ``unit`` other than "task" takes both from ``Task.span_units``."""
    target_fn, keep_fn = span_fns(task, unit)
    if target_fn is None:
        raise RevrelError(f"task '{task.name}' does not declare target spans; give the edit unit: '' (whole responses)")
    if keep and keep_fn is None:
        raise RevrelError(f"task '{task.name}' does not declare keep spans; set the negate edit's contrast to 0 and release.keep_side=retain")
    texts = [r["response"] for r in rows]
    spans = target_fn(texts)
    keeps = keep_fn(texts) if keep else [None] * len(rows)
    kept = [dict(r, spans=[list(x) for x in sp], **({"keep_spans": [list(x) for x in ks]} if keep else {}))
            for r, sp, ks in zip(rows, spans, keeps) if sp]
    chars = sum(b - a for r in kept for a, b in r["spans"])
    info = {"rows_with_spans": len(kept), "rows": len(rows), "span_char_share": round(chars / max(sum(len(r["response"]) for r in kept), 1), 3)}
    if keep:
        info["rows_with_keep_spans"] = sum(bool(r["keep_spans"]) for r in kept)
    return (kept or rows), info
