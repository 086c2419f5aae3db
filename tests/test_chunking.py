"""Tests for rag.chunking: offsets, coverage, overlap, headings, repeated blocks."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from rag.chunking import chunk_corpus, chunk_document, plan_chunks
from rag.ingest.prepare import load_documents as load_corpus
from rag.text import document_spans
from rag.types import Document

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SETTINGS = [(240, 60), (400, 80), (120, 0), (60, 20)]


@lru_cache(maxsize=None)
def _seeds():
    docs = load_corpus(SEEDS)
    return docs, {d.doc_id: document_spans(d.doc_id, d.text) for d in docs}


def _doc(text: str, doc_id: str = "t") -> Document:
    return Document(doc_id=doc_id, path=f"/tmp/{doc_id}.txt", title="T", date=None, text=text)


@pytest.mark.parametrize("size,overlap", SETTINGS)
def test_seed_chunk_invariants(size, overlap):
    docs, layouts = _seeds()
    chunks, got_layouts = chunk_corpus(docs, size, overlap)
    assert set(got_layouts) == {d.doc_id for d in docs}
    ids = [c.chunk_id for c in chunks]
    assert len(ids) == len(set(ids))
    by_id = {d.doc_id: d for d in docs}
    for c in chunks:
        doc = by_id[c.doc_id]
        assert doc.text[c.start:c.end] == c.text
        assert c.title == doc.title
        assert c.clean and c.text == c.text.strip()
        layout = layouts[c.doc_id]
        for ds, de, reason in layout.dropped:
            assert de <= c.start or ds >= c.end, (c.chunk_id, reason)
    for doc in docs:
        layout = layouts[doc.doc_id]
        own = [c for c in chunks if c.doc_id == doc.doc_id]
        assert [c.chunk_id for c in own] == [f"{doc.doc_id}#{i}" for i in range(len(own))]
        plans = plan_chunks(doc.text, layout, size, overlap)
        assert len(plans) == len(own)
        # Every sentence character is owned by exactly one chunk's main part.
        owned: dict[int, int] = {}
        for plan in plans:
            assert sum(len(p.clean) for p in plan.pieces[:plan.overlap]) <= overlap
            for p in plan.main:
                for pos in range(p.start, p.end):
                    owned[pos] = owned.get(pos, 0) + 1
        for s in layout.sentences:
            assert all(owned.get(pos) == 1 for pos in range(s.start, s.end)), s.text[:20]
        assert set(owned) <= {pos for s in layout.sentences for pos in range(s.start, s.end)}
        starts = [c.start for c in own]
        assert starts == sorted(starts)


def test_seed_chunk_sizes_reasonable():
    docs, _ = _seeds()
    chunks, layouts = chunk_corpus(docs, 240, 60)
    longest_sentence = max(len(s.clean) for lay in layouts.values() for s in lay.sentences)
    for c in chunks:
        assert len(c.clean) <= max(300, longest_sentence + 1)


def test_repeated_block_in_one_chunk_only():
    docs, _ = _seeds()
    chunks, _ = chunk_corpus(docs, 240, 60)
    hits = [c for c in chunks if "政协委员孟广友" in c.clean]
    assert len(hits) == 1
    assert sum("重大决策部署同向同行" in c.clean for c in chunks) == 1


def test_heading_glued_to_following_paragraph():
    text = ("大标题\n\n——副标题\n\n本报记者 张三\n\n" + "第一段的内容很多,要写很长。" * 3 + "\n\n"
            "小标题一\n\n" + "第二段的内容也不少。" * 3)
    doc = _doc(text)
    chunks = chunk_document(doc, document_spans(doc.doc_id, text), 60, 0)
    assert chunks[0].clean.startswith("大标题\n——副标题\n本报记者张三\n第一段")
    assert any(c.clean.startswith("小标题一\n第二段") for c in chunks)
    assert not any(c.clean.strip() in ("小标题一", "大标题") for c in chunks)


def test_overlap_is_trailing_whole_sentences():
    text = "".join(f"这是第{n}句话。" for n in "一二三四五六七八九十")
    doc = _doc(text)
    layout = document_spans(doc.doc_id, text)
    chunks = chunk_document(doc, layout, 21, 7)
    assert [c.clean for c in chunks][:3] == ["这是第一句话。这是第二句话。这是第三句话。",
                                             "这是第三句话。这是第四句话。这是第五句话。",
                                             "这是第五句话。这是第六句话。这是第七句话。"]
    no_overlap = chunk_document(doc, layout, 21, 0)
    assert "".join(c.clean for c in no_overlap) == text


def test_long_sentence_own_chunk_and_clause_split():
    long_clause = "，".join(f"第{n}项工作稳步推进" for n in range(1, 41)) + "。"
    text = "短句一。\n\n" + long_clause + "\n\n短句二。"
    doc = _doc(text)
    layout = document_spans(doc.doc_id, text)
    chunks = chunk_document(doc, layout, 100, 0)
    assert len(long_clause) > 200
    inner = [c for c in chunks if "项工作稳步推进" in c.clean]
    assert len(inner) > 2
    assert all(len(c.clean) <= 100 for c in inner)
    for c in chunks:
        assert text[c.start:c.end] == c.text
    # Between 100 and 200 characters: one chunk, not split.
    mid = "，".join(f"第{n}项工作稳步推进" for n in range(1, 15)) + "。"
    doc2 = _doc(mid)
    chunks2 = chunk_document(doc2, document_spans("t", mid), 100, 0)
    assert [c.clean for c in chunks2] == [mid]


def test_chunk_never_spans_repeat():
    block = "关键词:职业教育\n\n职业教育是国民教育体系的重要组成部分。\n\n近年来,辽源职业教育得到高度重视。\n\n"
    text = "标题\n\n" + block + "中间一段。\n\n" + block + "结尾一句话。"
    doc = _doc(text)
    layout = document_spans(doc.doc_id, text)
    chunks = chunk_document(doc, layout, 500, 100)
    rep = [d for d in layout.dropped if d[2].startswith("repeat")]
    assert rep
    for c in chunks:
        for ds, de, _ in rep:
            assert de <= c.start or ds >= c.end
    assert sum(c.clean.count("职业教育是国民教育体系") for c in chunks) == 1


def test_bad_parameters():
    doc = _doc("一句话。")
    layout = document_spans("t", doc.text)
    for size, overlap in [(0, 0), (10, 10), (10, -1)]:
        with pytest.raises(ValueError):
            chunk_document(doc, layout, size, overlap)
    with pytest.raises(ValueError):
        chunk_corpus([doc, doc], 100, 10)


def test_empty_layout_gives_no_chunks():
    doc = _doc("\n\n")
    assert chunk_document(doc, document_spans("t", doc.text), 100, 10) == []
