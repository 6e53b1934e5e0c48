import pytest

from revrel.errors import RevrelError
from revrel.models.loading import load_model, resolve_model_source


def test_missing_path_is_clear_error():
    with pytest.raises(RevrelError, match="does not exist"):
        load_model("/no/such/path")


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RevrelError, match="no weights"):
        resolve_model_source(str(tmp_path))


def test_pickle_only_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(RevrelError, match="--trust-pickle"):
        resolve_model_source(str(tmp_path))


def test_truncated_safetensors(tiny_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(RevrelError, match="could not load"):
        load_model(str(bad))


def test_tokenizer_without_chat_template(tiny_dir, tmp_path):
    import json
    import shutil

    bad = tmp_path / "nochat"
    shutil.copytree(tiny_dir, bad)
    (bad / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((bad / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bad / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(RevrelError, match="chat template"):
        load_model(str(bad))


def test_truncated_gguf(tmp_path):
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 20)
    with pytest.raises(RevrelError, match="GGUF"):
        load_model(str(g))


def test_manifest_detects_tampered_cache(tmp_path):
    from revrel.io import atomic_write_json, sha256_file
    from revrel.models.loading import _verify_manifest

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    atomic_write_json(tmp_path / "revrel-manifest.json", {"files": {"model.safetensors": sha256_file(tmp_path / "model.safetensors")}})
    assert _verify_manifest(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"tampered")
    assert not _verify_manifest(tmp_path)
    (tmp_path / "revrel-manifest.json").write_text("{not json")
    assert not _verify_manifest(tmp_path)


def test_pickle_allowed_with_trust_flag(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    assert resolve_model_source(str(tmp_path), trust_pickle=True)[0] == "folder"
