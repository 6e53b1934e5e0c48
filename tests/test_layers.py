"""The package's imports flow one way: models -> metrics -> tasks -> reveal -> release -> rounds -> pipeline -> commands.

Every ``import`` in src/revrel (top-level or inside a function) is read with ast; a module may import its own
layer or a lower one, never a higher one, and nothing imports the source checkout's ``benchmarks`` scripts.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "revrel"

# lowest first; a module belongs to the first entry its dotted name starts with
LAYERS = [
    ("revrel.errors", "revrel.io", "revrel.progress", "revrel.faults", "revrel.config", "revrel.data", "revrel"),
    ("revrel.models",),
    ("revrel.metrics",),
    ("revrel.tasks",),
    ("revrel.reveal",),
    ("revrel.release",),
    ("revrel.rounds",),
    ("revrel.pipeline",),
    ("revrel.commands", "revrel.cli"),
]


def layer(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (rank, len(p))
    assert best is not None, module
    return best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, f"{node.module}.{a.name}") if node.module == "revrel" else (node.lineno, node.module) for a in node.names]
    return out


def upward_imports(root: Path = SRC) -> list[str]:
    bad = []
    for f in sorted(root.rglob("*.py")):
        me = module_name(f)
        for line, target in imports(f):
            if target.split(".")[0] == "benchmarks":
                bad.append(f"{me}:{line} imports the benchmarks scripts")
            if target.split(".")[0] != "revrel":
                continue
            if layer(target) > layer(me):
                bad.append(f"{me}:{line} imports {target} (layer {layer(target)} > {layer(me)})")
    return bad


def test_imports_flow_one_way():
    assert upward_imports() == []


def test_the_check_fails_on_an_upward_import(tmp_path):
    pkg = tmp_path / "revrel" / "models"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text("def f():\n    from revrel.pipeline import unlearn\n")
    global SRC
    saved, SRC = SRC, tmp_path / "revrel"
    try:
        assert upward_imports(tmp_path / "revrel") == ["revrel.models.bad:2 imports revrel.pipeline (layer 7 > 1)"]
    finally:
        SRC = saved


def path_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that its code uses (docstrings and comments aside): where a script path would be run."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_code_names_a_benchmarks_script():
    bad = [f"{f.relative_to(SRC)}:{line}" for f in sorted(SRC.rglob("*.py")) for line, text in path_strings(f)
           if "benchmarks" in text and ".py" in text]
    assert bad == []
