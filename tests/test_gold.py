"""Tests for :mod:`rag.gold` and the real dev gold set ``eval/gold.jsonl``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rag.gold import TYPES, UNANSWERABLE_TYPES, GoldQuestion, load_gold, norm_ws, validate_gold

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "eval" / "gold.jsonl"
SEEDS = ROOT / "seeds"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    # A layout line break inside a sentence and a full-width comma.
    (d / "000_aaaa.txt").write_text("全市脱贫人口人均收入达到11473\n\n元，同比提高26.7%。\n",
                                    encoding="utf-8")
    (d / "001_bbbb.txt").write_text("全市有各级各类职业院校11所。\n", encoding="utf-8")
    return d


def _q(**kw) -> GoldQuestion:
    base = dict(id="q1", question="问题？", doc_prefixes=("000",), evidence=("人均收入达到11473元",),
                keys=("11473元",), unanswerable=False, type="factoid")
    base.update(kw)
    return GoldQuestion(**base)


# ---- the real gold set -------------------------------------------------------------------


def test_real_gold_validates_against_seeds():
    gold = load_gold(GOLD)
    assert validate_gold(gold, SEEDS) == []


def test_real_gold_size_and_ids():
    gold = load_gold(GOLD)
    assert len(gold) >= 80
    assert sum(q.unanswerable for q in gold) >= 10
    ids = [q.id for q in gold]
    assert len(ids) == len(set(ids))


SPLITS = {name: GOLD.parent / f"{name}.jsonl" for name in ("gold", "heldout", "train", "test", "test2", "test3", "test4")}


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_every_split_validates_with_six_types(split):
    gold = load_gold(SPLITS[split])
    assert validate_gold(gold, SEEDS) == []
    assert {q.type for q in gold} == set(TYPES)
    for q in gold:
        assert (q.type in UNANSWERABLE_TYPES) == q.unanswerable, q.id


def test_splits_are_large_enough_and_disjoint():
    """Issue 9: at least 300 questions over the six types, >= 50 near-domain and >= 20
    out-of-domain unanswerable; no id or question shared between splits."""
    by_split = {name: load_gold(path) for name, path in SPLITS.items()}
    everything = [q for qs in by_split.values() for q in qs]
    types = Counter(q.type for q in everything)
    assert len(everything) >= 300
    assert types["near_domain"] >= 50 and types["out_of_domain"] >= 20
    assert len({q.id for q in everything}) == len(everything)
    for a in by_split:
        for b in by_split:
            if a < b:
                shared = {norm_ws(q.question) for q in by_split[a]} & {norm_ws(q.question) for q in by_split[b]}
                assert not shared, (a, b, shared)


def test_real_gold_shape():
    gold = load_gold(GOLD)
    types = Counter(q.type for q in gold)
    assert set(types) == set(TYPES)
    for q in gold:
        assert (q.type in UNANSWERABLE_TYPES) == q.unanswerable, q.id
        if q.unanswerable:
            assert q.evidence == () and q.keys == () and q.doc_prefixes == (), q.id
            continue
        assert 1 <= len(q.evidence) <= 3, q.id
        assert 1 <= len(q.keys) <= 3, q.id
        assert all(2 <= len(k) <= 12 for k in q.keys), q.id
        if q.type == "two_part":  # the dev set's two-part questions span two documents
            assert len(q.doc_prefixes) >= 2, q.id
    # every seed document is covered
    covered = {p for q in gold for p in q.doc_prefixes}
    assert covered == {p.name[:3] for p in SEEDS.glob("*.txt")}


def test_real_gold_evidence_is_single_line_and_per_document():
    """Evidence strings are verbatim substrings of one line of a named document."""
    texts = {p.name[:3]: p.read_text(encoding="utf-8") for p in SEEDS.glob("*.txt")}
    for q in load_gold(GOLD):
        lines_by_doc = {d: texts[d].splitlines() for d in q.doc_prefixes}
        for e in q.evidence:
            assert 8 <= len(e) <= 40, (q.id, e)
            assert any(e in ln for lines in lines_by_doc.values() for ln in lines), (q.id, e)
        if q.type == "two_part":
            for d, lines in lines_by_doc.items():
                assert any(e in ln for e in q.evidence for ln in lines), (q.id, d)


# ---- load_gold ---------------------------------------------------------------------------


def test_load_gold_defaults_and_doc_split(tmp_path: Path):
    path = _write_jsonl(tmp_path / "g.jsonl", [
        {"id": "a", "question": "问？", "doc": "000|001", "evidence": ["x"], "keys": ["y"]},
        {"id": "b", "question": "天气？", "doc": "", "evidence": [], "keys": [],
         "unanswerable": True, "type": "out_of_domain"},
    ])
    a, b = load_gold(path)
    assert a.doc_prefixes == ("000", "001")
    assert a.unanswerable is False and a.type == ""
    assert b.unanswerable is True and b.doc_prefixes == ()
    assert a.to_dict()["doc"] == "000|001"


def test_load_gold_skips_blank_lines(tmp_path: Path):
    path = tmp_path / "g.jsonl"
    path.write_text('\n{"id": "a", "question": "q", "doc": "000", "evidence": ["e"], '
                    '"keys": ["k"]}\n\n', encoding="utf-8")
    assert [q.id for q in load_gold(path)] == ["a"]


@pytest.mark.parametrize("bad", [
    '{"id": "b", "question": ',                     # truncated JSON
    '["not", "an", "object"]',                      # not an object
    '{"question": "no id"}',                        # missing id
    '{"id": "b", "question": "q", "keys": "k"}',    # keys must be a list
    '{"id": "b", "question": "q", "unanswerable": "yes"}',
])
def test_load_gold_rejects_malformed_line_with_line_number(tmp_path: Path, bad: str):
    path = tmp_path / "bad.jsonl"
    good = '{"id": "a", "question": "q", "doc": "000", "evidence": ["e"], "keys": ["k"]}'
    path.write_text(good + "\n" + good.replace('"a"', '"a2"') + "\n" + bad + "\n",
                    encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_gold(path)
    assert "bad.jsonl:3" in str(info.value)


# ---- validate_gold -----------------------------------------------------------------------


def test_validate_accepts_whitespace_and_width_differences(corpus: Path):
    # evidence crosses the file's line break; the file has a full-width comma
    q = _q(evidence=("人均收入达到11473元,同比",), keys=("11473 元",))
    assert validate_gold([q], corpus) == []


def test_validate_reports_missing_evidence(corpus: Path):
    problems = validate_gold([_q(evidence=("人均收入达到99999元",))], corpus)
    assert len(problems) == 1
    assert "q1" in problems[0] and "99999" in problems[0]


def test_validate_reports_missing_key(corpus: Path):
    problems = validate_gold([_q(keys=("11所",))], corpus)  # key only in 001, doc is 000
    assert len(problems) == 1 and "11所" in problems[0]


def test_validate_reports_unknown_doc_prefix(corpus: Path):
    problems = validate_gold([_q(doc_prefixes=("009",))], corpus)
    assert any("009" in p for p in problems)


def test_validate_reports_duplicates_and_empty_fields(corpus: Path):
    qs = [_q(), _q(), _q(id="q2", question="  "), _q(id="q3", evidence=(), keys=()),
          _q(id="q4", unanswerable=True, type="near_domain"), _q(id="q5", type="cross"),
          _q(id="q6", type="near_domain")]
    problems = "\n".join(validate_gold(qs, corpus))
    assert "q1: duplicate id" in problems
    assert "q2: empty question" in problems
    assert "q3: answerable question has no evidence" in problems
    assert "q3: answerable question has no keys" in problems
    assert "q4: unanswerable question must have no doc, evidence or keys" in problems
    assert "q5: unknown type 'cross'" in problems
    assert "q6: type 'near_domain' contradicts unanswerable=False" in problems


def test_validate_cross_document_looks_in_all_named_docs(corpus: Path):
    q = _q(doc_prefixes=("000", "001"), evidence=("职业院校11所",), keys=("11473元", "11所"))
    assert validate_gold([q], corpus) == []


def test_extra_training_questions_validate_and_are_new():
    """``eval/train_extra.jsonl`` (not in the shipped model) is valid gold and shares no question
    with the splits."""
    extra = load_gold(GOLD.parent / "train_extra.jsonl")
    assert validate_gold(extra, SEEDS) == []
    others = {norm_ws(q.question) for path in SPLITS.values() for q in load_gold(path)}
    assert not {norm_ws(q.question) for q in extra} & others
