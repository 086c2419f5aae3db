"""Tests for :mod:`rag.metrics` with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag.gold import GoldQuestion
from rag.metrics import (
    answer_has_keys, first_relevant_rank, format_markdown_report, format_per_type, hit_is_relevant, mrr_at_k,
    ndcg_at_k, normalize_for_match, percentile, recall_at_k, relevance_vector, score_records,
    strip_citation_markers,
)

INV_LOG2_3 = 1 / math.log2(3)  # discount at rank 2 = 0.6309...
INV_LOG2_5 = 1 / math.log2(5)  # discount at rank 4 = 0.4307...


# ---- normalisation and matching ------------------------------------------------------------


def test_normalize_for_match_removes_whitespace_and_folds_width():
    assert normalize_for_match(" 人均收入\n\n达到１１４７３ 元，") == "人均收入达到11473元,"


def test_hit_is_relevant_across_line_breaks_and_widths():
    assert hit_is_relevant("全市脱贫人口人均收入达到11473\n\n元，同比", ["人均收入达到11473元,同比"])
    assert not hit_is_relevant("全市脱贫人口人均收入", ["11473元"])
    assert not hit_is_relevant("任何文本", [])
    assert not hit_is_relevant("任何文本", [""])  # empty evidence never matches


def test_relevance_vector():
    assert relevance_vector(["甲乙", "丙 丁", "戊"], ["丙丁", "戊"]) == [0, 1, 1]


def test_answer_has_keys_whitespace_and_full_width():
    assert answer_has_keys("人均收入达到１１４７３ 元[1]。", ["11473元"])
    assert answer_has_keys("“三电系统”与“氢轻\n市场”", ["三电系统", "氢轻市场"])
    assert not answer_has_keys("三电系统", ["三电系统", "氢轻市场"])  # all keys required
    assert answer_has_keys("任何", [])


def test_strip_citation_markers():
    assert strip_citation_markers("甲[1]乙[12]。[a]") == "甲乙。[a]"


# ---- rank metrics ------------------------------------------------------------------------


def test_recall_at_k():
    rel = [0, 1, 0, 1]
    assert recall_at_k(rel, 1) == 0.0
    assert recall_at_k(rel, 2) == 1.0
    assert recall_at_k(rel, 10) == 1.0
    assert recall_at_k([], 5) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(rel, 0)


def test_mrr_at_k():
    assert mrr_at_k([1, 0, 0], 10) == 1.0
    assert mrr_at_k([0, 0, 1, 1], 10) == pytest.approx(1 / 3)
    assert mrr_at_k([0, 0, 1], 2) == 0.0  # first relevant beyond k
    assert mrr_at_k([0, 0], 10) == 0.0
    assert first_relevant_rank([0, 0, 1]) == 3
    assert first_relevant_rank([0]) is None


def test_ndcg_single_relevant():
    assert ndcg_at_k([1, 0, 0], 10) == pytest.approx(1.0)
    assert ndcg_at_k([0, 1, 0], 10) == pytest.approx(INV_LOG2_3)  # 0.6309
    assert ndcg_at_k([0, 0, 0, 1], 10) == pytest.approx(INV_LOG2_5)  # 0.4307
    assert ndcg_at_k([0, 0, 1], 2) == 0.0  # retrieved, but below the cut-off
    assert ndcg_at_k([0, 0, 0], 10) == 0.0


def test_ndcg_multiple_relevant():
    # DCG = 1/log2(3) + 1/log2(5); IDCG (2 relevant) = 1 + 1/log2(3)
    expected = (INV_LOG2_3 + INV_LOG2_5) / (1 + INV_LOG2_3)
    assert ndcg_at_k([0, 1, 0, 1], 10) == pytest.approx(expected)
    assert expected == pytest.approx(0.650920, abs=1e-6)
    # ideal capped at k: 3 relevant in the list, k = 2 -> IDCG = 1 + 1/log2(3)
    assert ndcg_at_k([1, 0, 1, 1], 2) == pytest.approx(1 / (1 + INV_LOG2_3))
    assert ndcg_at_k([1, 1, 1], 10) == pytest.approx(1.0)


@pytest.mark.parametrize("values", [[3.0], [1, 2, 3, 4], [10, 20, 30], [5, 1, 9, 7, 3, 2.5]])
@pytest.mark.parametrize("q", [0, 25, 50, 90, 95, 100])
def test_percentile_matches_numpy(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_empty_is_nan_and_q_checked():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# ---- score_records -----------------------------------------------------------------------

RAW = {"000_f5": "前言。全市脱贫人口人均收入达到11473\n\n元，同比提高26.7%。"}
ANSWER = "全市脱贫人口人均收入达到11473\n\n元"  # raw[3:23]


def _gold() -> list[GoldQuestion]:
    return [
        GoldQuestion("q1", "明天天气？", (), (), (), True, "out_of_domain"),
        GoldQuestion("q2", "脱贫人口人均收入多少？", ("000",), ("人均收入达到11473元",),
                     ("11473元",), False, "factoid"),
        GoldQuestion("q3", "同比提高多少？", ("000",), ("同比提高26.7%",), ("26.7%",), False,
                     "paraphrase"),
    ]


def _records() -> list[dict]:
    hit_other = {"rank": 1, "chunk_id": "000_f5#0", "doc_id": "000_f5", "start": 0, "end": 3,
                 "score": 0.9, "text": "前言。"}
    hit_ev = {"rank": 2, "chunk_id": "000_f5#1", "doc_id": "000_f5", "start": 3, "end": 23,
              "score": 0.8, "text": ANSWER}
    assert RAW["000_f5"][3:23] == ANSWER
    return [
        {"question": "明天天气？", "answer": "", "abstained": True, "citations": [],
         "hits": [hit_other], "timings_ms": {"embed": 1.0, "retrieve": 4.0, "total": 10.0}},
        {"question": "脱贫人口人均收入多少？", "answer": ANSWER + "[1]", "abstained": False,
         "citations": [
             {"id": 1, "doc_id": "000_f5", "title": "t", "start": 3, "end": 23,
              "text": ANSWER, "url": "u"},
             {"id": 2, "doc_id": "000_f5", "title": "t", "start": 0, "end": 5,
              "text": "wrong", "url": "u"},
         ],
         # listed out of order: ranks decide
         "hits": [hit_ev, hit_other], "timings_ms": {"embed": 2.0, "retrieve": 6.0,
                                                     "total": 20.0}},
        {"question": "同比提高多少？", "answer": "", "abstained": True, "citations": [],
         "hits": [hit_other], "timings_ms": {"embed": 3.0, "retrieve": 8.0, "total": 30.0}},
    ]


def test_score_records_exact_numbers():
    s = score_records(_gold(), _records(), raw_texts=RAW)
    assert list(s) == [
        "n", "n_answerable", "n_unanswerable", "recall@1", "recall@5", "recall@10", "mrr@10",
        "ndcg@10", "key_recall", "answer_chars_median", "answer_chars_p90", "citation_validity",
        "abstention_precision", "abstention_recall", "false_abstention_rate", "latency_ms",
        "per_question", "per_type"]
    assert (s["n"], s["n_answerable"], s["n_unanswerable"]) == (3, 2, 1)
    assert s["recall@1"] == 0.0           # q2 relevant at rank 2, q3 never
    assert s["recall@5"] == 0.5
    assert s["recall@10"] == 0.5
    assert s["mrr@10"] == pytest.approx(0.25)            # (1/2 + 0) / 2
    assert s["ndcg@10"] == pytest.approx(INV_LOG2_3 / 2)  # (0.6309 + 0) / 2
    assert s["key_recall"] == 0.5          # q2 hit, q3 abstained
    assert s["answer_chars_median"] == 20.0  # ANSWER without [1]: 20 chars incl. "\n\n"
    assert s["answer_chars_p90"] == 20.0
    assert s["citation_validity"] == 0.5   # 1 of 2 citations matches raw[start:end]
    assert s["abstention_precision"] == 0.5  # abstained on q1 (right) and q3 (wrong)
    assert s["abstention_recall"] == 1.0
    assert s["false_abstention_rate"] == 0.5
    assert s["latency_ms"]["total"] == {"p50": 20.0, "p95": pytest.approx(29.0)}
    assert s["latency_ms"]["embed"]["p50"] == 2.0
    assert s["latency_ms"]["retrieve"]["p95"] == pytest.approx(7.8)

    p1, p2, p3 = s["per_question"]
    assert p1 == {"id": "q1", "question": "明天天气？", "type": "out_of_domain",
                  "first_relevant_rank": None, "key_hit": False, "abstained": True,
                  "answer": "", "failure": ""}
    assert p2["first_relevant_rank"] == 2 and p2["key_hit"] and p2["failure"] == ""
    assert p3["first_relevant_rank"] is None and p3["abstained"] and not p3["key_hit"]
    assert p3["failure"] == "evidence not in top 10; false abstention"


def test_score_records_per_type_figures():
    s = score_records(_gold(), _records(), raw_texts=RAW)
    assert list(s["per_type"]) == ["out_of_domain", "factoid", "paraphrase"]
    ood, factoid, para = (s["per_type"][t] for t in ("out_of_domain", "factoid", "paraphrase"))
    assert ood == {"n": 1, "abstained": 1.0, "key_recall": None, "false_abstention_rate": None,
                   "recall@5": None, "citation_validity": None, "answer_chars_median": None}
    assert factoid == {"n": 1, "abstained": 0.0, "key_recall": 1.0, "false_abstention_rate": 0.0,
                       "recall@5": 1.0, "citation_validity": 0.5, "answer_chars_median": 20.0}
    assert para["abstained"] == 1.0 and para["key_recall"] == 0.0 and para["false_abstention_rate"] == 1.0
    assert "per_type" not in score_records(_gold(), _records(), per_type=False)
    table = format_per_type(s["per_type"])
    assert table.splitlines()[0].startswith("| type | n | key_recall | abstained |")
    assert "| out_of_domain | 1 | – | 1.000 | – |" in table
    assert "## Per question type" in format_markdown_report(s, "t")


def test_score_records_without_raw_texts_and_other_failures():
    gold = _gold()
    recs = _records()
    recs[0] = {**recs[0], "abstained": False, "answer": "晴"}     # answered the unanswerable
    recs[1] = {**recs[1], "answer": "人均收入很高[1]"}             # key missing
    s = score_records(gold, recs)
    assert s["citation_validity"] is None
    assert s["key_recall"] == 0.0
    assert s["abstention_precision"] == 0.0  # only q3 abstained, and it was answerable
    assert s["abstention_recall"] == 0.0
    assert s["answer_chars_median"] == pytest.approx(3.5)  # lengths 1 and 6
    fails = [p["failure"] for p in s["per_question"]]
    assert fails[0] == "answered an unanswerable question"
    assert fails[1] == "answer lacks keys: 11473元"


def test_score_records_hit_from_other_document_is_not_relevant():
    gold = [_gold()[1]]
    rec = _records()[1]
    rec = {**rec, "hits": [{**rec["hits"][0], "rank": 1, "doc_id": "003_x"}]}
    assert score_records(gold, [rec])["recall@10"] == 0.0


def test_score_records_length_mismatch():
    with pytest.raises(ValueError):
        score_records(_gold(), _records()[:2])


def test_score_records_empty_sets_give_none():
    s = score_records([], [])
    assert s["n"] == 0 and s["recall@1"] is None and s["key_recall"] is None
    assert s["answer_chars_median"] is None and s["abstention_precision"] is None
    assert s["latency_ms"] == {} and s["per_question"] == [] and s["per_type"] == {}


def test_format_markdown_report():
    s = score_records(_gold(), _records(), raw_texts=RAW)
    md = format_markdown_report(s, "Dev eval")
    assert md.startswith("# Dev eval\n")
    assert "| recall@5 | 0.500 |" in md
    assert "| mrr@10 | 0.250 |" in md
    assert "| total | 20.0 | 29.0 |" in md
    assert "## Failures (1)" in md
    assert "| q3 | paraphrase |" in md and "false abstention" in md
    assert "| q2 |" not in md
    none_md = format_markdown_report(score_records(_gold(), _records()), "x")
    assert "| citation_validity | n/a |" in none_md
