import pytest

from revrel.config import load_config, parse_set
from revrel.errors import RevrelError


def test_defaults_validate():
    cfg = load_config()
    assert cfg.task == "toxicity" and cfg.reveal.k >= 1


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

    from revrel.release.edit import parse_edits

    presets = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert {"toxicity.yaml", "code.yaml", "ner.yaml"} <= {p.name for p in presets}
    for p in presets:
        assert parse_edits(load_config(p).release.edits)


def test_release_has_at_most_25_settable_fields():
    """Release's own settings plus its PEM's and every edit's: the issue's budget for concepts a user must learn."""
    import dataclasses

    from revrel.config import PemConfig, ReleaseConfig
    from revrel.release.edit import edit_fields

    own = [f.name for f in dataclasses.fields(ReleaseConfig) if f.name != "pem"]
    total = len(own) + len(dataclasses.fields(PemConfig)) + sum(len(v) for v in edit_fields().values())
    assert total <= 25, total
