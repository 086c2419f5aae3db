import pytest

from rag.retriever import Retriever


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_hits_are_ranked_unique_and_verbatim(tiny_pipeline, mode):
    hits = tiny_pipeline.retrieve("梅花鹿存栏量有多少", top_k=4, mode=mode)
    assert hits, mode
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert len({h.chunk_id for h in hits}) == len(hits)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    for h in hits:
        assert tiny_pipeline.document(h.doc_id).text[h.start:h.end] == h.text
    assert hits[0].doc_id == "b_deer"


def test_hybrid_scores_are_in_unit_range_and_carry_components(tiny_pipeline):
    hits = tiny_pipeline.retrieve("政协收到多少件提案", top_k=3)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert hits[0].doc_id == "c_report"
    assert "bm25" in hits[0].scores and "dense" in hits[0].scores


def test_rrf_fusion_and_argument_checks(tiny_pipeline):
    index = tiny_pipeline.store
    vec = tiny_pipeline.embed_question("双师型教师")
    rrf = Retriever(index, fusion="rrf").search("双师型教师", vec, top_k=2)
    assert rrf[0].doc_id == "a_edu" and rrf[0].score <= 1 / 61
    with pytest.raises(ValueError):
        Retriever(index, dense_weight=1.5)
    with pytest.raises(ValueError):
        Retriever(index, fusion="magic")
    with pytest.raises(ValueError):
        Retriever(index).search("x", vec, top_k=0)
    with pytest.raises(ValueError):
        tiny_pipeline.retrieve("x", mode="sparse")


def test_question_without_any_known_token_still_returns_dense_hits(tiny_pipeline):
    hits = tiny_pipeline.retrieve("？？？ zzzz", top_k=3)
    assert all(h.scores.get("bm25", 0) == 0 for h in hits)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_top_k_above_candidate_k_still_returns_top_k_hits(tiny_pipeline, mode):
    index = tiny_pipeline.store
    vec = tiny_pipeline.embed_question("政协")
    hits = Retriever(index, candidate_k=2).search("政协 梅花鹿 职业教育 提案", vec, top_k=4, mode=mode)
    assert len(hits) > 2  # more than candidate_k
