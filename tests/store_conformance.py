"""The store conformance suite: the same tests for every :class:`rag.store.base.Store`.

A test module for a store imports everything from here and defines two fixtures:

* ``store_factory``: ``() -> Store``, a new, empty store with the metadata of
  :data:`STORE_META` (dim 256, the fake embedder);
* ``reopen``: ``(store) -> Store``, a second handle on the same data, as another process would
  open it (used to check that committed writes are seen after ``refresh()``).

See ``tests/test_store.py`` for the embedded store.
"""

from __future__ import annotations

import numpy as np
import pytest

from rag.ingest.prepare import prepare_document
from rag.store.base import PreparedDocument
from rag.tokenize import tokenize, user_dict_hash
from rag.types import Document

from .fakes import FakeEmbedder

EMBEDDER = FakeEmbedder()
STORE_META = {"model_id": EMBEDDER.model_id, "model_fingerprint": "", "dim": EMBEDDER.dim,
              "chunk_size": 60, "chunk_overlap": 10, "section_context": 1, "user_dict_hash": user_dict_hash()}

TEXTS = {
    "edu": "职业教育发展的建议\n\n——访市政协委员 张三\n\n张三委员建议，加强双师型教师队伍建设，提高职业院校办学水平。\n"
           "他还建议优化职普比，推动产教融合，让更多学生掌握技能。\n\n2022年，全市职业院校招生人数达到3500人。\n",
    "deer": "梅花鹿产业调研\n\n东丰县梅花鹿存栏量达到15万只，是全国重要的梅花鹿养殖基地。\n"
            "委员们建议延伸产业链条，打造梅花鹿老字号品牌，发展精深加工。\n",
    "reports/2020/work": "政协工作报告\n\n一年来，市政协共收到提案286件，立案257件，办复率达到100%。\n"
                         "围绕营商环境开展专题协商，提出意见建议42条。\u2028这一行含有分隔符。\n",
}


def prepared(doc_id: str, text: str | None = None, pages: tuple[int, ...] = (), fmt: str = "txt") -> PreparedDocument:
    text = TEXTS[doc_id] if text is None else text
    doc = Document(doc_id=doc_id, path=f"/src/{doc_id}.{fmt}", title=text.split("\n", 1)[0], date=None,
                   text=text, format=fmt, pages=pages)
    return prepare_document(doc, f"sha-{hash(text) & 0xffffffff:08x}", STORE_META["chunk_size"],
                            STORE_META["chunk_overlap"])


def put(store, doc_id: str, text: str | None = None, **kw) -> PreparedDocument:
    p = prepared(doc_id, text, **kw)
    vectors = EMBEDDER.embed_passages(p.embedding_texts())
    n = len(p.chunks)
    store.upsert(p, vectors[:n], vectors[n:])
    return p


@pytest.fixture
def filled(store_factory):
    store = store_factory()
    for doc_id in TEXTS:
        put(store, doc_id)
    return store


def test_documents_round_trip_verbatim(filled):
    assert [i.doc_id for i in filled.list_documents()] == sorted(TEXTS)
    for doc_id, text in TEXTS.items():
        doc = filled.document(doc_id)
        assert doc.text == text and doc.doc_id == doc_id
        info = filled.document_info(doc_id)
        assert info.chunks > 0 and info.chars == len(text) and info.format == "txt"
    assert filled.document("nope") is None and filled.document_info("nope") is None


def test_chunks_and_sentences_are_verbatim_with_adjacent_ordinals(filled):
    for doc_id, text in TEXTS.items():
        info = filled.document_info(doc_id)
        ids = [f"{doc_id}#{i}" for i in range(info.chunks)]
        chunks = filled.fetch_chunks(ids, with_sentences=True)
        assert list(chunks) == ids or set(chunks) == set(ids)
        for item in chunks.values():
            assert item.chunk.text == text[item.chunk.start:item.chunk.end]
            assert item.page is None
            indices = [s.sentence_index for s in item.sentences]
            assert indices == list(range(indices[0], indices[0] + len(indices))) if indices else True
            for s in item.sentences:
                assert s.span.text == text[s.span.start:s.span.end]
                assert s.vector.shape == (EMBEDDER.dim,) and s.vector.dtype == np.float32
                assert abs(float(np.linalg.norm(s.vector)) - 1.0) < 1e-2
    assert filled.fetch_chunks(["nope#0", "edu#999", "garbage"]) == {}


def test_dense_search_finds_a_chunk_by_its_own_text(filled):
    item = filled.fetch_chunks(["deer#0"])["deer#0"]
    query = EMBEDDER.embed_queries([item.chunk.clean])[0]
    hits = filled.dense_search(query, 3)
    assert hits[0][0] == "deer#0" and hits[0][1] > 0.9
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
    chunk_vec, sentence_vecs = filled.vectors(["deer#0"])["deer#0"]
    assert chunk_vec.shape == (EMBEDDER.dim,) and sentence_vecs.shape[1] == EMBEDDER.dim


def test_lexical_search_ranks_by_bm25(filled):
    hits = filled.lexical_search(tokenize("梅花鹿存栏量"), 5)
    assert hits and hits[0][0].startswith("deer#")
    assert all(score > 0 for _, score in hits)
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:]))
    assert filled.lexical_search(tokenize("火星探测器"), 5) == []
    assert filled.lexical_search([], 5) == []


def test_replace_swaps_every_derived_row(filled):
    before = filled.generation()
    put(filled, "deer", "梅花鹿产业调研\n\n今年东丰县新建鹿苑两处，存栏量保持稳定。\n")
    assert filled.generation() > before
    assert "新建鹿苑" in filled.document("deer").text
    assert not any(c.startswith("deer#") for c, _ in filled.lexical_search(tokenize("老字号品牌"), 10))
    assert filled.lexical_search(tokenize("鹿苑"), 3)[0][0].startswith("deer#")
    assert len(filled.list_documents()) == len(TEXTS)


def test_delete_removes_document_chunks_and_terms(filled):
    assert filled.mentions("梅花鹿")
    assert filled.delete("deer") is True
    assert filled.delete("deer") is False
    assert filled.document("deer") is None
    assert not filled.mentions("梅花鹿")
    assert not any(c.startswith("deer#") for c, _ in filled.lexical_search(tokenize("梅花鹿"), 10))
    query = EMBEDDER.embed_queries(["东丰县梅花鹿存栏量"])[0]
    assert not any(c.startswith("deer#") for c, _ in filled.dense_search(query, 10))
    assert filled.fetch_chunks(["deer#0"]) == {}


def test_idf_follows_the_archive(filled):
    rare, common = filled.idf("梅花鹿"), filled.idf("建议")
    assert rare > common > 0
    assert filled.idf("从未出现的词") > rare
    put(filled, "more", "补充材料\n\n梅花鹿养殖户增加。梅花鹿价格稳定。\n")
    assert filled.idf("梅花鹿") < rare


def test_other_handles_see_committed_changes_after_refresh(filled, reopen):
    other = reopen(filled)
    query = tokenize("鹿苑")
    assert other.lexical_search(query, 3) == []
    put(filled, "new", "新文件\n\n东丰县新建鹿苑两处。\n")
    other.refresh()
    assert other.lexical_search(query, 3)[0][0].startswith("new#")
    assert other.document("new") is not None
    filled.delete("new")
    other.refresh()
    assert other.document("new") is None and other.lexical_search(query, 3) == []


def test_pages_map_to_chunks(store_factory):
    store = store_factory()
    text = "第一页标题\n\n第一页正文写了一些内容。\n\n第二页正文写着民生实事项目共计二十六项。\n"
    second = text.index("第二页")
    put(store, "scan", text, pages=(0, second), fmt="pdf")
    items = store.fetch_chunks([f"scan#{i}" for i in range(store.document_info("scan").chunks)])
    for item in items.values():
        assert item.page == (2 if item.chunk.start >= second else 1)
    assert store.document("scan").pages == (0, second) and store.document_info("scan").pages == 2


def test_wrong_vector_shapes_are_refused(store_factory):
    store = store_factory()
    p = prepared("edu")
    with pytest.raises(ValueError):
        store.upsert(p, np.zeros((1, EMBEDDER.dim), np.float32), np.zeros((0, EMBEDDER.dim), np.float32))
    assert store.list_documents() == []


def test_implements_the_protocol(store_factory):
    from rag.store.base import Store

    assert isinstance(store_factory(), Store)
