import pytest

from revrel.config import load_config, parse_set
from revrel.errors import RevrelError


def test_defaults_validate():
    cfg = load_config()
    assert cfg.task == "toxicity" and cfg.reveal.k >= 1


def test_a_task_without_config_runs_its_packaged_recipe_and_no_recipe_names_a_layer_or_a_strength():
    """`revrel unlearn --task T` with no --config is T's recipe (shipped in the package); no recipe sets a strength
    (the budget chooses them) or a layer index; a task without a recipe gets the plain defaults."""
    from revrel.config import RunConfig, recipe_path
    from revrel.release.edit import parse_edits

    for task in ("toxicity", "code", "ner"):
        path = recipe_path(task)
        assert path is not None and path.parent.name == "recipes" and path.parent.parent.name == "revrel"
        cfg = load_config(None, {"task": task})
        assert cfg == load_config(path) and cfg.release.budget > 0
        text = path.read_text()
        assert "strength" not in text.split("release:")[1].split("eval:")[0] and "layers." not in text
        assert parse_edits(cfg.release.edits)
    assert load_config(None, {"task": "tiny"}).release == RunConfig().release
    assert load_config(None, {"task": "ner", "release": {"budget": 0.2}}).release.budget == 0.2  # --budget lays over it


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\nreveal:\n  k: 2\n")
    cfg = load_config(p, parse_set(["reveal.k=5", "reveal.candidates=pool,soft"]))
    assert cfg.seed == 3 and cfg.reveal.k == 5 and cfg.reveal.candidates == ["pool", "soft"]


@pytest.mark.parametrize("text,needle", [
    ("seed: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("reveal:\n  kk: 3\n", "unknown config key 'reveal.kk'"),
    ("reveal:\n  k: -1\n", "reveal.k=-1 is out of range"),
    ("release:\n  pem:\n    lr: .inf\n", "finite number"),
    ("seed: abc\n", "must be an integer"),
    ("reveal: 3\n", "must be a mapping"),
    ("reveal:\n  forget_from: responses\n", "reveal.forget_from must be pulls, instructions or greedy"),
])
def test_bad_yaml_is_one_line_error(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(RevrelError) as e:
        load_config(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_set_flag():
    with pytest.raises(RevrelError):
        parse_set(["reveal.k"])


def test_shipped_configs_load_with_only_fields_that_exist():
    """Each preset passes the config's own checks and every edit's (unknown keys or edits fail here)."""
    from pathlib import Path

    from revrel.config import RECIPES
    from revrel.release.edit import parse_edits

    presets = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")) + sorted(RECIPES.glob("*.yaml"))
    assert {"toxicity.yaml", "code.yaml", "ner.yaml"} <= {p.name for p in presets}
    for p in presets:  # the target recipe needs what only the user gives: the name
        assert parse_edits(load_config(p, {"target": {"name": "Ada Lovelace"}} if p.stem == "target" else None).release.edits)


def test_release_has_at_most_25_settable_fields():
    """Release's own settings plus its PEM's and every edit's: the issue's budget for concepts a user must learn."""
    import dataclasses

    from revrel.config import PemConfig, ReleaseConfig
    from revrel.release.edit import edit_fields

    own = [f.name for f in dataclasses.fields(ReleaseConfig) if f.name != "pem"]
    total = len(own) + len(dataclasses.fields(PemConfig)) + sum(len(v) for v in edit_fields().values())
    assert total <= 25, total
