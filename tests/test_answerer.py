"""Tests for the answerer (rag.answer) over a tiny inline corpus (no model, no index):
candidates are built directly from sentence spans with offsets into the inline raw texts, vectors
come from FakeEmbedder, and a toy ranker stands in for the retriever.

Most tests inject a small hand-written :class:`AnswerModel` (``make_model``) so that they check
the mechanics (features, composition, citations, abstention) independently of the fitted file;
``tests/test_answerer_model.py`` checks the bundled file itself."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rag.answer import (LIST_LEAD, LOW_CONFIDENCE_LEAD, NOT_FOUND, AnswerModel, Answerer, Candidate,
                        analyse_question, asked_slots, bigram_jaccard, content_weights, display_text,
                        norm, question_type, split_clauses, strip_template, strip_whitespace,
                        sub_questions)
from rag.answer.answerer import COMPOSE_PARAMS
from rag.answer.features import ANSWER_FEATURES, SENTENCE_FEATURES
from rag.answer.model import FORMAT_VERSION
from rag.answer.sentences import _is_fragment
from rag.answer.slots import find_mentions, supports
from rag.archive import InMemoryArchive
from rag.config import Settings
from rag.types import Document, Hit, Span
from tests.fakes import FakeEmbedder

RAW = {
    "000_a": (
        "\n\n乘势而上 推动乡村振兴开新局\n\n——访市政协委员 秦勇\n\n"
        "市政协委员、市乡村振兴局党组书记、局长秦勇在接受记者采访时表示，过去一年来全市脱贫人口"
        "人均收入达到11473元，同比提高26.7%。创建省级美丽乡村59个，13项乡村建设行动有效推进。\n\n"
        "2022年，我们要坚持把巩固拓展脱贫攻坚成果放在突出位置，在做好成果巩固的基础上，推动乡村产业发展部\n"
        "署落实。秦勇表示，将大力发展梅花鹿养殖等特色产业，带动农民增收。\n"
    ),
    "001_b": (
        "关于加快发展职业教育的建议\n\n民进辽源市委员会\n\n"
        "我市职业教育存在专业设置与产业需求脱节的问题。建议优化职业院校专业设置，紧密对接梅花鹿、"
        "新材料等主导产业。建议加强双师型教师队伍建设，\n完善校企合作机制。"
        "建议提高职业教育经费投入比例，改善实训条件。\n"
    ),
    "002_c": (
        "政协辽源市第八届委员会常务委员会工作报告\n\n（2020年1月6日）\n\n"
        "2019年，市政协共收到提案312件，立案286件。委员们围绕职业教育、营商环境等议题深入调研，"
        "提出建议45条。加强双师型教师队伍建设，完善校企合作机制。市政协组织委员视察梅花鹿产业园区，"
        "推动鹿产品精深加工。\n"
    ),
}
DOCUMENTS = {d: Document(doc_id=d, path=f"/x/{d}.txt", title=t.strip().split("\n")[0], date="2022-01-10",
                         text=t) for d, t in RAW.items()}
DOCS = InMemoryArchive(DOCUMENTS)

EMB = FakeEmbedder()


def make_model(sentence: dict[str, float], answer: dict[str, float], threshold: float = 0.5,
               intercept: float = 0.0, answer_intercept: float = 0.0, **compose) -> AnswerModel:
    """A hand-written model: logistic scorers with the given weights (others 0) and Platt
    scaling ``p = sigmoid(f)``."""
    def logistic(weights, names, b):
        unknown = set(weights) - set(names)
        assert not unknown, unknown
        return {"kind": "logistic", "mean": [0.0] * len(names), "scale": [1.0] * len(names),
                "coef": [weights.get(n, 0.0) for n in names], "intercept": b, "platt_a": -1.0,
                "platt_b": 0.0}
    params = {"factoid_second_ratio": 1.01, "list_min_ratio": 0.2, "list_by_source": 0, "part_other_weight": 0.5,
              "part_whole_weight": 0.0,
              "factoid_full_chars": 60, "factoid_window_chars": 90, "list_window_chars": 120}
    params.update(compose)
    return AnswerModel.from_dict({
        "format": FORMAT_VERSION,
        "features": {"sentence": list(SENTENCE_FEATURES), "answer": list(ANSWER_FEATURES)},
        "sentence": logistic(sentence, SENTENCE_FEATURES, intercept),
        "heads": {mode: {"answerability": logistic(answer, ANSWER_FEATURES, answer_intercept),
                         "correctness": logistic(answer, ANSWER_FEATURES, answer_intercept),
                         "threshold": threshold} for mode in ("dense", "lexical")},
        "compose": params, "training": {}})


#: Sentences score by topic coverage, slot support and list-item cues; answerability by the
#: answer's topic coverage (abstain below half of it covered).
TEST_MODEL = make_model(
    {"lex": 6.0, "lex_section": 1.0, "slot_near": 2.0, "slot_attr": 1.0, "slot_person_heading": 4.0,
     "list_x_item": 1.0, "list_x_heading": -3.0, "list_x_byline": -3.0, "dense_gap": 1.0},
    {"answer_lex": 8.0}, threshold=0.5, answer_intercept=-4.0)

ANSWERABLE = [
    ("全市脱贫人口人均收入达到多少", "factoid", ["11473元"]),
    ("市政协2019年收到多少件提案", "factoid", ["312件"]),
    ("秦勇要大力发展什么特色产业", "factoid", ["梅花鹿"]),
    ("全市脱贫人口人均收入达到多少？创建省级美丽乡村多少个？", "factoid", ["11473元", "59个"]),
    ("委员对职业教育提了什么建议", "list", ["职业教育"]),
    ("如何加强双师型教师队伍建设", "list", ["双师型"]),
    ("如何发展梅花鹿产业", "list", ["梅花鹿"]),
]
OUT_OF_DOMAIN = ["辽源明天天气怎么样", "红烧肉怎么做", "今天股票行情如何", "上海的GDP是多少",
                 "推荐一份川菜菜谱"]


def _sentences(doc_id: str, raw: str) -> list[Span]:
    """Toy splitter: sentence ends at 。！？ or a blank line; offsets exclude outer whitespace."""
    spans, start = [], 0
    for m in re.finditer(r"[。！？]|\n\s*\n", raw + "\n\n"):
        end = min(m.end() if m.group() in "。！？" else m.start(), len(raw))
        a, b = start, end
        while a < b and raw[a].isspace():
            a += 1
        while b > a and raw[b - 1].isspace():
            b -= 1
        if a < b:
            spans.append(Span(doc_id, a, b, raw[a:b], strip_whitespace(raw[a:b])))
        start = m.end()
    return spans


SENTENCES = [s for d, raw in RAW.items() for s in _sentences(d, raw)]
VECTORS = EMB.embed_passages([s.clean for s in SENTENCES])


def _chunks():
    """Chunks of two consecutive sentences of one document: (chunk_id, [sentence ids])."""
    out, by_doc = [], {}
    for i, s in enumerate(SENTENCES):
        by_doc.setdefault(s.doc_id, []).append(i)
    for doc_id, ids in by_doc.items():
        for k in range(0, len(ids), 2):
            out.append((f"{doc_id}#{k // 2}", ids[k:k + 2]))
    return out


CHUNKS = _chunks()


def retrieve(question: str, top_k: int = 5):
    """Toy retriever: chunk score = 0.5 * cosine + 0.5 * character overlap; returns hits and the
    candidates of those hits the way Pipeline.candidates builds them."""
    qv = EMB.embed_queries([question])[0]
    qchars = set(question)
    scored = []
    for chunk_id, ids in CHUNKS:
        text = "".join(SENTENCES[i].clean for i in ids)
        vec = EMB.embed_passages([text])[0]
        overlap = len(qchars & set(text)) / max(len(qchars), 1)
        scored.append((0.5 * float(vec @ qv) + 0.5 * overlap, chunk_id, ids))
    scored.sort(key=lambda t: (-t[0], t[1]))
    hits, cands, seen = [], [], set()
    for rank, (score, chunk_id, ids) in enumerate(scored[:top_k], start=1):
        doc_id = SENTENCES[ids[0]].doc_id
        start, end = SENTENCES[ids[0]].start, SENTENCES[ids[-1]].end
        hits.append(Hit(rank=rank, chunk_id=chunk_id, doc_id=doc_id, start=start, end=end, score=score,
                        text=RAW[doc_id][start:end], title=DOCUMENTS[doc_id].title))
        for i in ids:
            if i not in seen:
                seen.add(i)
                cands.append(Candidate(span=SENTENCES[i], vector=VECTORS[i], chunk_rank=rank,
                                       chunk_score=score, paragraph=0, sentence_index=i))
    return qv, hits, cands


def ask(question: str, settings: Settings | None = None, dense: bool = True, model: AnswerModel = TEST_MODEL):
    settings = settings or Settings(base_url="http://h:1", model="fake-hash-embedder")
    qv, hits, cands = retrieve(question)
    return Answerer(settings, model=model).answer(question, qv if dense else None, hits, cands, DOCS), cands


ALL_QUESTIONS = [q for q, _, _ in ANSWERABLE] + OUT_OF_DOMAIN


# --- invariants -------------------------------------------------------------------------------

@pytest.mark.parametrize("question", ALL_QUESTIONS)
@pytest.mark.parametrize("dense", [True, False])
def test_citations_are_verbatim_with_line_and_url(question, dense):
    draft, _ = ask(question, dense=dense)
    for n, c in enumerate(draft.citations, start=1):
        raw = RAW[c.doc_id]
        assert c.id == n
        assert raw[c.start:c.end] == c.text and c.text
        assert c.line == raw[:c.start].count("\n") + 1
        assert c.url == f"http://h:1/sources/{c.doc_id}?start={c.start}&end={c.end}"
        assert c.title == DOCUMENTS[c.doc_id].title and c.date == "2022-01-10"
        assert f"[{n}]" in draft.text


@pytest.mark.parametrize("question", ALL_QUESTIONS)
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.99])
def test_stripped_answer_is_exactly_the_cited_spans(question, threshold):
    draft, _ = ask(question, Settings(abstain_threshold=threshold))
    stripped = strip_template(draft.text)
    assert stripped == "".join(display_text(c.text) for c in draft.citations)
    assert strip_whitespace(stripped) == "".join(strip_whitespace(c.text) for c in draft.citations)
    # Nothing outside the template glue, markers and cited spans.
    glue = draft.text
    for c in draft.citations:
        glue = glue.replace(display_text(c.text), "", 1)
    glue = re.sub(r"\[\d+\]|^\d+\. ", "", glue, flags=re.M)
    assert glue.replace("\n", "") in ("", LIST_LEAD, NOT_FOUND, LOW_CONFIDENCE_LEAD)


@pytest.mark.parametrize("question", ALL_QUESTIONS)
def test_answers_never_end_on_a_clause_mark_nor_start_inside_a_clause(question):
    """Regression (issue 9): ``…全市脱贫人口人均收入达到11473元,[1]`` ended on a dangling comma.
    A quote ends at a sentence end or before a clause mark, and starts at a sentence or clause
    start."""
    draft, cands = ask(question, Settings(abstain_threshold=0.0))
    for c in draft.citations:
        assert c.text.rstrip()[-1] not in "，,；;：:、", c.text
        sentence = next(k.span for k in cands if k.span.doc_id == c.doc_id
                        and k.span.start <= c.start and c.end <= k.span.end)
        before = RAW[c.doc_id][sentence.start:c.start].rstrip()
        assert before == "" or before[-1] in "，,；;：:。！？", (before[-5:], c.text)


def test_factoid_window_drops_the_trailing_comma():
    draft, _ = ask("全市脱贫人口人均收入达到多少", Settings(abstain_threshold=0.0))
    assert draft.citations and "11473元" in draft.citations[0].text
    assert not draft.text.split("[")[0].endswith(("，", ","))


def test_relative_url_when_base_url_empty():
    draft, _ = ask("全市脱贫人口人均收入达到多少", Settings(abstain_threshold=0.0, base_url=""))
    assert draft.citations[0].url.startswith("/sources/000_a?start=")


def test_confidence_in_unit_interval():
    for q in ALL_QUESTIONS:
        draft, _ = ask(q)
        assert 0.0 <= draft.confidence <= 1.0


# --- abstention -------------------------------------------------------------------------------

@pytest.mark.parametrize("question", OUT_OF_DOMAIN)
def test_out_of_domain_abstains(question):
    draft, _ = ask(question)
    assert draft.abstained
    assert draft.text.startswith(NOT_FOUND)
    if not draft.low_confidence:
        assert draft.text == NOT_FOUND and draft.citations == ()


@pytest.mark.parametrize("question,qtype,keys", ANSWERABLE)
@pytest.mark.parametrize("dense", [True, False])
def test_answerable_questions_answer_with_keys(question, qtype, keys, dense):
    draft, _ = ask(question, dense=dense)
    assert not draft.abstained, draft
    assert draft.question_type == qtype
    for key in keys:
        assert key in strip_template(draft.text)


def test_no_candidates_abstains():
    draft = Answerer(Settings(), model=TEST_MODEL).answer("全市脱贫人口人均收入达到多少", None, [], [], DOCS)
    assert draft.abstained and draft.text == NOT_FOUND and draft.confidence == 0.0


def test_candidate_with_wrong_offsets_is_ignored():
    bad = Span("000_a", 0, 5, "假的文本啊", "假的文本啊")
    cand = Candidate(bad, VECTORS[0], 1, 1.0, 0, 0)
    draft = Answerer(Settings(), model=TEST_MODEL).answer("假的文本", None, [], [cand], DOCS)
    assert draft.abstained and draft.citations == ()


def test_low_confidence_snippets_when_borderline():
    # A threshold above any probability forces abstention on an answerable question.
    draft, _ = ask("全市脱贫人口人均收入达到多少", Settings(abstain_threshold=0.999))
    assert draft.abstained and draft.low_confidence
    assert draft.text.startswith(LOW_CONFIDENCE_LEAD + "\n1. ")
    assert 1 <= len(draft.citations) <= 2


def test_no_snippets_for_a_place_the_archive_never_mentions():
    draft, _ = ask("上海的梅花鹿产业怎么样", Settings(abstain_threshold=0.999))
    assert draft.abstained and draft.text == NOT_FOUND and not draft.low_confidence


def test_threshold_zero_answers_whatever_names_something_the_archive_knows():
    for q in ALL_QUESTIONS:
        draft, _ = ask(q, Settings(abstain_threshold=0.0))
        known = any(DOCS.mentions(t) for t in content_weights(q, DOCS))
        assert draft.abstained == (not known or analyse_question(q).future_day), q


def test_question_about_nothing_the_archive_holds_abstains_whatever_the_threshold():
    draft, _ = ask("红烧肉怎么做", Settings(abstain_threshold=0.0))
    assert draft.abstained and draft.text == NOT_FOUND and draft.confidence == 0.0


def test_question_about_a_day_after_it_is_asked_abstains_whatever_the_threshold():
    # The archive holds past documents: 明天 (tomorrow) is never in it, whatever the topic.
    assert not ask("全市脱贫人口人均收入达到多少", Settings(abstain_threshold=0.0))[0].abstained
    draft, _ = ask("明天全市脱贫人口人均收入达到多少", Settings(abstain_threshold=0.0))
    assert draft.abstained and draft.text == NOT_FOUND and draft.confidence == 0.0
    assert analyse_question("后天辽源会下雪吗").future_day
    assert not analyse_question("今天辽源气温多少度").future_day


def test_model_threshold_used_unless_settings_override():
    strict = make_model({"lex": 6.0}, {"answer_lex": 8.0}, threshold=0.999, answer_intercept=-4.0)
    qv, hits, cands = retrieve("全市脱贫人口人均收入达到多少")
    assert Answerer(Settings(), model=strict).answer("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS).abstained
    loose = Answerer(Settings(abstain_threshold=0.0), model=strict)
    assert not loose.answer("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS).abstained


def test_dimension_mismatch_raises():
    _, hits, cands = retrieve("全市脱贫人口人均收入达到多少")
    with pytest.raises(ValueError):
        Answerer(Settings(), model=TEST_MODEL).answer("全市脱贫人口人均收入达到多少", np.ones(3, dtype=np.float32),
                                                      hits, cands, DOCS)


def test_dense_features_dropped_for_another_embedder():
    """A model fitted for one embedder must not read another's cosines: lexical mode."""
    dense_only = make_model({"dense": 5.0}, {"dense_max": 10.0}, threshold=0.5, answer_intercept=-5.0)
    dense_only.training = {"embedding_model": "multilingual-e5-small", "embedding_dim": 384}
    qv, hits, cands = retrieve("全市脱贫人口人均收入达到多少")
    answerer = Answerer(Settings(model="other-model"), model=dense_only)
    case = answerer.case("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS)
    assert case.prep.dense is None
    col = SENTENCE_FEATURES.index("has_dense")
    assert (case.X[:, col] == 0).all()
    same = Answerer(Settings(model="multilingual-e5-small"), model=dense_only)
    assert same.case("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS).prep.dense is None  # dim 256 != 384
    dense_only.training = {"embedding_model": "multilingual-e5-small", "embedding_dim": 256}
    assert same.case("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS).prep.dense is not None


# --- brevity and composition -------------------------------------------------------------------

@pytest.mark.parametrize("question", ["全市脱贫人口人均收入达到多少", "市政协2019年收到多少件提案",
                                      "秦勇要大力发展什么特色产业"])
def test_factoid_is_one_sentence_or_clause(question):
    draft, cands = ask(question)
    assert draft.question_type == "factoid"
    assert len(draft.citations) == 1
    c = draft.citations[0]
    assert draft.text == f"{display_text(c.text)}[1]"
    assert any(k.span.doc_id == c.doc_id and k.span.start <= c.start and c.end <= k.span.end
               for k in cands)


def test_compound_factoid_quotes_one_sentence_per_part():
    draft, _ = ask("全市脱贫人口人均收入达到多少？创建省级美丽乡村多少个？")
    assert draft.question_type == "factoid"
    texts = [display_text(c.text) for c in draft.citations]
    assert any("11473元" in t for t in texts) and any("59个" in t for t in texts)
    assert draft.text == "\n".join(f"{display_text(c.text)}[{c.id}]" for c in draft.citations)


def test_a_sentence_answering_two_parts_is_quoted_once():
    draft, _ = ask("全市脱贫人口人均收入达到多少，同比提高了多少", Settings(abstain_threshold=0.0))
    stripped = strip_template(draft.text)
    assert "11473元" in stripped and "26.7%" in stripped
    assert len(draft.citations) == 1


@pytest.mark.parametrize("question,parts", [
    ("报告是谁作的？在哪天？", ["报告是谁作的", "在哪天"]),
    ("市政协收到多少件提案", ["市政协收到多少件提案"]),
    ("甲？乙丙；丁戊?", ["甲？乙丙；丁戊?"]),
    ("脱贫人口人均收入现在多少了，比上年涨了多少", ["脱贫人口人均收入现在多少了", "比上年涨了多少"]),
    ("为了让农民多挣钱，乡村振兴部门打算怎么做", ["为了让农民多挣钱，乡村振兴部门打算怎么做"]),
    ("市直中职学校几所 高职学校几所", ["市直中职学校几所", "高职学校几所"]),
])
def test_sub_questions(question, parts):
    assert sub_questions(question) == parts


def test_list_answer_draws_on_several_sources():
    draft, _ = ask("委员对职业教育提了什么建议")
    assert draft.question_type == "list"
    assert draft.text.startswith(LIST_LEAD + "\n1. ")
    assert len({c.doc_id for c in draft.citations}) >= 2
    assert 2 <= len(draft.citations) <= Settings().answer_max_sentences
    assert len(strip_template(draft.text)) <= Settings().answer_max_chars
    lines = draft.text.split("\n")[1:]
    assert len(lines) == len(draft.citations)
    for c, line in zip(draft.citations, lines):
        assert line == f"{c.id}. {display_text(c.text)}[{c.id}]"


def test_list_answer_groups_by_source():
    draft, _ = ask("委员对职业教育提了什么建议")
    docs = [c.doc_id for c in draft.citations]
    runs = [d for i, d in enumerate(docs) if i == 0 or docs[i - 1] != d]
    assert len(runs) == len(set(runs))


def test_list_respects_max_sentences():
    draft, _ = ask("委员对职业教育提了什么建议", Settings(answer_max_sentences=1))
    assert len(draft.citations) == 1


def test_duplicate_sentences_dropped():
    draft, _ = ask("如何加强双师型教师队伍建设", Settings(abstain_threshold=0.0, answer_max_sentences=5,
                                                      answer_max_chars=1000))
    texts = [strip_whitespace(c.text) for c in draft.citations]
    # B and C both hold "…加强双师型教师队伍建设，完善校企合作机制。" - quote it once.
    assert sum("双师型" in t for t in texts) == 1
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            assert bigram_jaccard(a, b) <= 0.7


# --- question analysis -------------------------------------------------------------------------

@pytest.mark.parametrize("question,expected", [
    ("全市脱贫人口人均收入达到多少", "factoid"),
    ("市政协收到几件提案", "factoid"),
    ("九届一次会议哪年召开", "factoid"),
    ("会议何时召开", "factoid"),
    ("工作报告是什么时候作的", "factoid"),
    ("谁作了常委会工作报告", "factoid"),
    ("哪个部门牵头乡村振兴", "factoid"),
    ("哪位委员关注梅花鹿产业", "factoid"),
    ("园区在哪里", "factoid"),
    ("这是第几次会议", "factoid"),
    ("是否提高了经费投入", "factoid"),
    ("秦勇是什么职务", "factoid"),
    ("委员对职业教育提了什么建议", "list"),
    ("有哪些民主党派参加", "list"),
    ("如何推动乡村振兴", "list"),
    ("怎样改善营商环境", "list"),
    ("怎么发展梅花鹿产业", "list"),
    ("政协有什么新举措", "list"),
    ("介绍一下双师型教师队伍建设", "list"),
    ("从哪几个方面推进", "list"),
    ("职业教育发展情况", "list"),
])
def test_question_type_table(question, expected):
    assert question_type(question) == expected


@pytest.mark.parametrize("question,kinds", [
    ("全市脱贫人口人均收入达到多少", [("money", "")]),
    ("市政协2019年收到多少件提案", [("count", "件")]),
    ("辽源常住人口有多少", [("count", "人")]),
    ("增长了多少", [("percent", "")]),
    ("会议是哪一年召开的", [("year", "")]),
    ("杨光是哪一年出生的", [("age", "")]),
    ("秦勇今年多大年纪", [("age", "")]),
    ("会议在哪天召开", [("date", "")]),
    ("这几年一共省下了多少负担", [("number", "")]),
    ("在辽源开公司要几天", [("duration", "")]),
    ("婚检率在全省排第几", [("ordinal", "")]),
    ("新闻热线电话是多少", [("phone", "")]),
    ("高速公路全长多少公里", [("measure", "公里")]),
    ("报告是谁作的", [("person", "")]),
    ("那篇稿子是哪个记者写的", [("person", "")]),
    ("疫苗是哪家公司生产的", [("org", "公司")]),
    ("他在哪所学校任教", [("org", "学校")]),
    ("刘革是哪个党派的", [("org", "党派")]),
    ("孙弘市长是哪里人", [("place", "")]),
    ("秦勇是什么职务", [("title", "")]),
    ("综合体叫什么", [("name", "")]),
    ("为什么要发展职业教育", [("reason", "")]),
    ("如何推动乡村振兴", []),
    ("签约了多少个项目、金额多少", [("count", "个"), ("money", "")]),
    ("五星级酒店啥时候开业", [("date", "")]),
    ("新校区几时能用上", [("date", "")]),
    ("她在工商联是啥职务", [("title", "")]),
    ("刘卫平在科技局干啥的", [("title", "")]),
    ("疫苗是啥公司生产的", [("org", "公司")]),
])
def test_asked_slots_table(question, kinds):
    assert [(s.kind, s.unit) for s in asked_slots(norm(question))] == kinds


def test_topic_and_asked_for_part_are_separated():
    q = analyse_question("集双高速辽源段全长多少公里", DOCS)
    assert [s.kind for s in q.slots] == ["measure"]
    assert q.attributes == ("全长",)
    assert "多少" not in q.weights and "集双" in q.weights
    q2 = analyse_question("市特殊教育学校现在有多少名学生")
    assert q2.attributes == ("学生",)
    q3 = analyse_question("2018年市政协一共立案多少件提案")
    assert [m.text for m in q3.constraints] == ["2018年"]


def test_unknown_names_are_reported():
    q = analyse_question("四平市脱贫人口人均收入是多少", DOCS)
    assert "四平市" in q.unknown_entities
    assert analyse_question("全市脱贫人口人均收入达到多少", DOCS).unknown_entities == ()


def test_content_weights_drop_stopwords_and_prefer_rare_words():
    w = content_weights("委员对职业教育提了什么建议", DOCS)
    assert not {"什么", "了", "对", "提了"} & set(w)
    assert "职业教育" in w
    w2 = content_weights("辽源明天天气怎么样", DOCS)
    assert w2["天气"] > w2["辽源"]  # unseen token gets the largest IDF
    assert content_weights("什么是哪些") == {}


def test_content_weights_leave_out_the_asked_for_phrase_and_aspect_particles():
    """What a question asks for (多少篇, 多少钱, 哪个学校) is not its topic: a quote need not
    repeat the measure word or the asked-for noun (发稿53篇 answers 发了多少篇稿子)."""
    for question, asked in (("媒体发了多少篇稿子", "篇"), ("低保每月多少钱", "钱"), ("他去的是哪个学校", "学校")):
        w = content_weights(question, DOCS, asked_slots(norm(question)))
        assert asked not in w, (question, w)
    w = content_weights("媒体发了多少篇稿子", DOCS, asked_slots(norm("媒体发了多少篇稿子")))
    assert "发了" not in w and "发" in w and "媒体" in w
    w = content_weights("脱贫人口人均收入去年达到多少", DOCS)
    assert "去年" not in w and "人均收入" in w  # when, not what about
    # a topic word before the interrogative stays (人口 in 人口有多少)
    assert "人口" in content_weights("辽源常住人口有多少", DOCS, asked_slots(norm("辽源常住人口有多少")))


def test_general_classifier_ge_is_answered_by_any_count():
    """个 is the general classifier (《现代汉语八百词》 个): 几个委员 is answered by 3名, while a specific
    classifier still needs its own (多少件 is not answered by 3名)."""
    ge = asked_slots(norm("劝退了几个委员"))[0]
    jian = asked_slots(norm("收到多少件提案"))[0]
    ming = [m for m in find_mentions(norm("劝退3名委员")) if m.kind == "count"][0]
    assert supports(ge, ming, norm("劝退了几个委员"))
    assert not supports(jian, ming, norm("收到多少件提案"))


# --- slot support in sentences ---------------------------------------------------------------

def test_slot_support_needs_the_asked_for_kind_near_the_topic():
    answerer = Answerer(Settings(), model=TEST_MODEL)
    qv, hits, cands = retrieve("全市脱贫人口人均收入达到多少")
    case = answerer.case("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS)
    near = SENTENCE_FEATURES.index("slot_near")
    hit = SENTENCE_FEATURES.index("slot_hit")
    by_text = {s.text: i for i, s in enumerate(case.prep.spans)}
    income = next(i for t, i in by_text.items() if "11473元" in t)
    assert case.X[income, near] == 1.0
    # 312件 is a number but not money: no support.
    reports = next(i for t, i in by_text.items() if "312件" in t) if any("312件" in t for t in by_text) else None
    if reports is not None:
        assert case.X[reports, hit] == 0.0


# --- text helpers ------------------------------------------------------------------------------

def test_split_clauses_verbatim():
    for s in SENTENCES:
        clauses = split_clauses(s)
        assert clauses
        for c in clauses:
            assert RAW[s.doc_id][c.start:c.end] == c.text
            assert s.start <= c.start < c.end <= s.end
    num = Span("x", 10, 24, "收入11,473元，增长：10:30", "")
    parts = [c.text for c in split_clauses(num)]
    assert parts == ["收入11,473元，", "增长：", "10:30"]
    assert [c.start for c in split_clauses(num)] == [10, 20, 23]


def test_display_text_removes_layout_whitespace_only():
    assert display_text("发展部\n\n署落实。") == "发展部署落实。"
    assert display_text("COVID  19 疫情\u3000防控") == "COVID 19疫情防控"
    assert strip_template("根据资料：\n1. 甲。[1]\n2. 乙[2]") == "甲。乙"
    assert strip_template(NOT_FOUND) == ""


def test_strip_template_on_factoid():
    assert strip_template("人均收入达到11473元[1]") == "人均收入达到11473元"


# --- headings, bylines, suggestion items, fragments --------------------------------------------

_PROPOSAL = ("关于提高基层防病治病能力的建议\n"
             "农工党委员会委员 刘新艳\n"
             "近年来,我市基层防病治病能力持续提升,群众满意度不断提高。\n"
             "建议:一是完善中医药服务体系建设,推广中医适宜技术。\n"
             "二是加强基层医疗人才队伍建设,落实乡村医生待遇。\n")
_REPORT = ("政协常务委员会工作报告\n"
           "刘立新\n"
           "现在,我代表政协常务委员会,向大会报告工作,请予审议。\n")


def _inline(doc_id: str, raw: str, headings: set[int]) -> tuple[Document, list[Candidate]]:
    """A document and its candidates: one per line, unit vectors (dense term constant)."""
    doc = Document(doc_id=doc_id, title=doc_id, date=None, path=f"{doc_id}.txt", text=raw)
    cands, pos = [], 0
    for i, line in enumerate(raw.split("\n")):
        if line:
            span = Span(doc_id=doc_id, start=pos, end=pos + len(line), text=line, clean=line.replace(" ", ""))
            cands.append(Candidate(span, np.ones(4, dtype=np.float32) / 2, 1, 1.0, i, 100 * len(doc_id) + i,
                                   heading=i in headings))
        pos += len(line) + 1
    return doc, cands


def _ask(question: str, doc: Document, cands: list[Candidate]):
    answerer = Answerer(Settings(abstain_threshold=0.0), model=TEST_MODEL)
    hits = [Hit(chunk_id=f"{doc.doc_id}#0", doc_id=doc.doc_id, start=0, end=len(doc.text),
                text=doc.text, score=1.0, rank=1)]
    return answerer.answer(question, None, hits, cands, InMemoryArchive({doc.doc_id: doc}))


def test_list_suggestions_skip_title_and_byline():
    doc, cands = _inline("p", _PROPOSAL, {0, 1})
    draft = _ask("刘新艳对提高基层防病治病能力提出了哪些建议？", doc, cands)
    quoted = [c.text for c in draft.citations]
    assert "关于提高基层防病治病能力的建议" not in quoted
    assert not any("刘新艳" == q[-3:] for q in quoted)
    assert any("中医药服务体系" in q for q in quoted)


def test_who_question_answered_by_byline():
    doc, cands = _inline("r", _REPORT, {0, 1})
    draft = _ask("政协常务委员会工作报告是谁作的？", doc, cands)
    assert draft.question_type == "factoid"
    assert "刘立新" in draft.text


def test_layout_fragment_detected():
    raw = "近年来我市在市委市政府高度重视下基层防病治病和健康\n\n程医疗服务,强化三级医院对口帮扶。\n"
    start = raw.index("程")
    span = Span(doc_id="f", start=start, end=len(raw) - 1, text=raw[start:-1], clean=raw[start:-1])
    assert _is_fragment(span, raw)
    first = Span(doc_id="f", start=0, end=raw.index("\n"), text=raw[:raw.index("\n")], clean="")
    assert not _is_fragment(first, raw)


def test_sentence_facts_are_cached_per_document():
    answerer = Answerer(Settings(), model=TEST_MODEL)
    answerer.warm_up(DOCS, list(DOCUMENTS))
    assert len(answerer.cache._docs.data) == len(DOCUMENTS)
    ask_once = answerer.answer
    qv, hits, cands = retrieve("全市脱贫人口人均收入达到多少")
    ask_once("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS)
    n = len(answerer.cache._sents.data)
    ask_once("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS)
    assert len(answerer.cache._sents.data) == n and n == len(cands)


def test_compose_params_are_all_required():
    assert set(TEST_MODEL.compose) == set(COMPOSE_PARAMS)


def test_list_round_robin_over_documents():
    from rag.answer.compose import choose_list, order_candidates

    answerer = Answerer(Settings(), model=TEST_MODEL)
    qv, hits, cands = retrieve("委员对职业教育提了什么建议", top_k=10)
    case = answerer.case("委员对职业教育提了什么建议", qv, hits, cands, DOCS)
    prep = case.prep
    # One document's sentences all score above every other document's.
    logits = np.array([2.0 - 0.1 * i if prep.spans[i].doc_id == "001_b" else -1.0 - 0.1 * i
                       for i in range(len(prep))])
    order = order_candidates(prep, logits)
    plain = choose_list(prep, logits, order, 0.01, 4)
    spread = choose_list(prep, logits, order, 0.01, 4, by_source=True)
    assert {prep.spans[i].doc_id for i in plain} == {"001_b"}
    assert len({prep.spans[i].doc_id for i in spread}) >= 2
    assert spread[0] == plain[0]


# --- round 2: identity questions, by-lines from the section, day deixis, synonyms --------------

@pytest.mark.parametrize("question,kind", [
    ("秦勇是谁", "title"), ("刘立新是谁？", "title"), ("宋煜是干什么的", "title"), ("于嗣沛到底是谁", "title"),
    ("谁是秦勇", "person"), ("市政协主席是谁", "person"), ("关于加强科普教育基地建设的建议是哪位提的", "person"),
])
def test_identity_question_asks_for_a_title(question, kind):
    """``X是谁`` about a named person asks who X is (a title or role), not for a person."""
    assert [s.kind for s in analyse_question(question).slots] == [kind]


def test_identity_question_answered_by_the_sentence_naming_the_person_with_a_title():
    draft, _ = ask("秦勇是谁", model=make_model({"lex": 4.0, "slot_near": 4.0, "heading": -5.0}, {}, threshold=0.0,
                                                 answer_intercept=5.0))
    assert not draft.abstained
    assert "局长秦勇" in draft.text


_BYLINE_DOC = ("关于加强我市科普教育基地建设的建议\n\n"
               "九三学社辽源市委员会兼职副主委 刘卫平\n\n"
               "科普教育基地存在总量不足的问题。\n"
               "建议加强科普教育基地人才队伍建设,设置专项人才经费。\n")


def _body_candidates(raw: str, doc_id: str, section: str) -> list[Candidate]:
    """The body lines of ``raw`` (after its heading block) as candidates under ``section``."""
    cands = []
    for i, line in enumerate(raw.split("\n")):
        if line and ("。" in line):
            start = raw.index(line)
            cands.append(Candidate(Span(doc_id, start, start + len(line), line, line), np.ones(4, dtype=np.float32) / 2,
                                   1, 1.0, 3, i, section=section))
    return cands


def test_who_question_quotes_the_byline_of_the_section():
    """The body sentence about the proposal names no one; its section's by-line line does, and is
    quoted verbatim before it."""
    doc = Document(doc_id="k", title="k", date=None, path="k.txt", text=_BYLINE_DOC)
    section = "关于加强我市科普教育基地建设的建议 九三学社辽源市委员会兼职副主委 刘卫平"
    cands = _body_candidates(_BYLINE_DOC, "k", section)
    hits = [Hit(chunk_id="k#0", doc_id="k", start=0, end=len(_BYLINE_DOC), text=_BYLINE_DOC, score=1.0, rank=1)]
    model = make_model({"lex": 6.0}, {}, threshold=0.0, answer_intercept=5.0)
    draft = Answerer(Settings(), model=model).answer("关于加强科普教育基地建设的建议是哪位提的", None, hits, cands,
                                                       InMemoryArchive({"k": doc}))
    assert not draft.abstained
    assert "刘卫平" in draft.text
    byline = [c for c in draft.citations if "刘卫平" in c.text]
    assert byline and byline[0].text == "九三学社辽源市委员会兼职副主委 刘卫平"
    for c in draft.citations:
        assert _BYLINE_DOC[c.start:c.end] == c.text
    # Not for a question that asks for something else.
    other = Answerer(Settings(), model=model).answer("科普教育基地存在什么问题", None, hits, cands,
                                                     InMemoryArchive({"k": doc}))
    assert "刘卫平" not in other.text


def test_section_mentions_name_the_person_of_a_byline():
    from rag.answer.sentences import section_mentions

    found = {(m.kind, m.text) for m in section_mentions(norm("关于加强我市科普教育基地建设的建议 九三学社辽源市委员会兼职副主委 刘卫平"))}
    assert ("person", "刘卫平") in found and ("title", "副主委") in found


@pytest.mark.parametrize("question,deictic", [
    ("明天辽源天气怎么样，会下雪吗", True), ("今天辽源气温多少度", True), ("辽源省级科技创新平台现在有几个", False),
    ("辽源的职业教育眼下存在哪些问题", False),
])
def test_day_deixis_is_a_question_property(question, deictic):
    assert analyse_question(question, DOCS).deictic is deictic


def test_question_cue():
    assert analyse_question("在吗，陪我聊会儿天呗").cued is False
    assert analyse_question("给我讲个笑话吧").cued is False
    assert analyse_question("辽源有哪些文化品牌").cued is True


def test_synonyms_come_from_cilin_and_count_in_coverage():
    from rag.answer.features import synonym_coverage
    from rag.answer.synonyms import synonyms

    assert "成婚" in synonyms("结婚") and "结婚" not in synonyms("结婚")
    assert all(len(w) >= 2 for w in synonyms("结婚"))
    weights = {"结婚": 2.0, "体检": 1.0}
    assert synonym_coverage(weights, {"结婚": synonyms("结婚")}, "成婚前体检", frozenset({"成婚", "前", "体检"})) == 1.0
    assert synonym_coverage(weights, {}, "成婚前体检", frozenset({"成婚", "前", "体检"})) == pytest.approx(1 / 3)


def test_relative_lexical_features():
    answerer = Answerer(Settings(), model=TEST_MODEL)
    qv, hits, cands = retrieve("全市脱贫人口人均收入达到多少")
    case = answerer.case("全市脱贫人口人均收入达到多少", qv, hits, cands, DOCS)
    col = {n: k for k, n in enumerate(SENTENCE_FEATURES)}
    lex = case.X[:, col["lex"]]
    best = int(np.argmax(lex))
    assert case.X[best, col["lex_gap"]] == 0.0 and case.X[best, col["lex_rrank"]] == 1.0
    assert np.all(case.X[:, col["lex_gap"]] <= 0.0)
    assert np.all(case.X[:, col["lex_syn"]] >= lex - 1e-12)


def test_answer_features_ignore_the_question_form():
    """Answerability reads evidence, not whether the question is a list or compound (a chatty
    compound weather question is not answerable because compound gold questions were)."""
    assert "is_list" not in ANSWER_FEATURES and "multi_part" not in ANSWER_FEATURES
    assert {"deictic_day", "question_cue", "answer_idf_max", "missing_max_idf"} <= set(ANSWER_FEATURES)


def test_list_kind_tells_problems_from_remedies():
    """存在哪些问题 is answered from the problems a proposal states, 有什么建议 from its remedies."""
    from rag.answer.features import list_kind

    assert list_kind(norm("存在的问题:经费投入不足,专业人才缺乏")) == -1
    assert list_kind(norm("存在的问题:经费不足。建议:加大投入")) == 1
    assert list_kind(norm("全市共有职业院校11所")) == 0
    answerer = Answerer(Settings(), model=TEST_MODEL)
    col = SENTENCE_FEATURES.index("list_kind")
    for question, sign in (("职业教育存在哪些问题", -1), ("职业教育有什么建议", 1), ("怎么解决职业教育的问题", 1)):
        qv, hits, cands = retrieve(question)
        case = answerer.case(question, qv, hits, cands, DOCS)
        kinds = case.X[:, col]
        assert set(np.unique(kinds)) <= {-1.0, 0.0, 1.0}
        own = [(i, list_kind(f.norm)) for i, f in enumerate(case.prep.facts) if list_kind(f.norm)]
        assert {k for _, k in own} == {-1, 1}, question  # the corpus has both kinds
        for i, k in own:  # a sentence naming its own kind is scored by it
            assert kinds[i] == k * sign, question
