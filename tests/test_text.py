"""Tests for rag.text: cleanup offset map, furniture, paragraph joining, sentences, repeats."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from rag.ingest.readers import read_file


def read_raw(path):
    return read_file(path).text
from rag.text import (
    DocumentLayout,
    clean_with_offsets,
    document_spans,
    find_repeats,
    is_furniture_line,
    is_heading_line,
    line_of,
    normalize_for_match,
    raw_span_of_clean,
    split_clauses,
)
from rag.types import Span

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SEED_FILES = sorted(SEEDS.glob("*.txt"))


@lru_cache(maxsize=None)
def _seed(stem_prefix: str) -> tuple[str, DocumentLayout]:
    path = next(p for p in SEED_FILES if p.name.startswith(stem_prefix))
    raw = read_raw(path)
    return raw, document_spans(path.stem, raw)


# --- cleanup and offsets ------------------------------------------------------------------------

def test_clean_joins_layout_breaks_and_converts_punctuation():
    raw = "他说,我们要坚持(一)发\n\n展。Hello  world,N95 口罩:好!"
    clean, offsets = clean_with_offsets(raw)
    assert clean == "他说，我们要坚持（一）发展。Hello world,N95口罩：好！"
    assert len(offsets) == len(clean)
    assert offsets == sorted(set(offsets))
    for ch, off in zip(clean, offsets):
        assert ch == raw[off] or ch == " " or raw[off] in ",:;?!()"


def test_clean_keeps_ascii_punctuation_between_ascii():
    clean, _ = clean_with_offsets("1,000 and a:b (x)")
    assert clean == "1,000 and a:b (x)"


def test_clean_substring_matches_full_clean():
    raw = "甲,乙\n\n丙(丁)戊。"
    full, offsets = clean_with_offsets(raw)
    for a in range(len(full)):
        for b in range(a + 1, len(full) + 1):
            s, e = raw_span_of_clean(offsets, a, b)
            sub, _ = clean_with_offsets(raw, s, e)
            assert sub == full[a:b]


def test_raw_span_of_clean_edges():
    raw = "ab\n\ncd"
    clean, offsets = clean_with_offsets(raw)
    assert clean == "ab cd"  # one space kept between ASCII characters
    assert raw_span_of_clean(offsets, 0, len(clean)) == (0, len(raw))
    assert raw_span_of_clean(offsets, 0, 0) == (0, 0)
    with pytest.raises(ValueError):
        raw_span_of_clean(offsets, 2, 1)
    with pytest.raises(ValueError):
        clean_with_offsets(raw, 3, 1)


def test_clean_with_crlf_and_bom():
    raw = "\ufeff标题\r\n\r\n正文第一句,还在\r\n继续。"
    layout = document_spans("x", raw)
    assert [s.clean for s in layout.sentences] == ["标题", "正文第一句，还在继续。"]
    for s in layout.sentences:
        assert raw[s.start:s.end] == s.text


def test_line_of_and_normalize():
    raw = "a\nb\n\nc"
    assert line_of(raw, 0) == 1
    assert line_of(raw, raw.index("c")) == 4
    assert normalize_for_match("１２３ ＡＢ\n c\u3000d") == "123ABcd"


# --- line classes --------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "LIAO YUAN RI BAO", "2021年1月27日 星期三", "庚子年十二月十五 十二月廿二立春",
    "总第8205期 今日4版", "国内统一刊号:CN22-0010 E-mail:jl_lyrb@126.com",
    "新闻热线:0437-3249118", "辽源信息港 <http://www.0437.com>", "中共辽源市委主管主办 辽源日报社出版",
])
def test_furniture_lines(line):
    assert is_furniture_line(line)


@pytest.mark.parametrize("line", ["党建引领 让前进步伐坚定有力", "(一)政治引领更加有力",
                                  "——访市政协委员 秦勇", "关键词:产业发展", "各位委员:",
                                  "(二)始终坚持思想政治引领,围绕辽源高质量转型发展大局广泛凝聚共识"])
def test_heading_lines(line):
    assert is_heading_line(line)
    assert not is_furniture_line(line)


@pytest.mark.parametrize("line", ["近年来,我市高度重视乡村", "产业是发展之本。", "鲁晓彬代表说,看到辽"])
def test_not_heading_lines(line):
    assert not is_heading_line(line)


# --- paragraphs and sentences on small inline texts ----------------------------------------------

def test_layout_break_mid_word_is_joined():
    raw = "标题一\n\n我将围绕工作重点,始终做到与市委重大决策部\n\n署同向同行、同频共振。下一句话。\n"
    layout = document_spans("x", raw)
    cleans = [s.clean for s in layout.sentences]
    assert cleans == ["标题一", "我将围绕工作重点，始终做到与市委重大决策部署同向同行、同频共振。", "下一句话。"]
    assert layout.headings == [True, False, False]
    assert layout.paragraph_ids[1] == layout.paragraph_ids[2] != layout.paragraph_ids[0]


def test_sentence_end_and_heading_break_paragraphs():
    raw = "第一段结束了。\n\n党建引领 让前进步伐坚定有力\n\n第二段开始,继续\n\n写下去。"
    layout = document_spans("x", raw)
    assert [s.clean for s in layout.sentences] == [
        "第一段结束了。", "党建引领让前进步伐坚定有力", "第二段开始，继续写下去。"]
    assert len(set(layout.paragraph_ids)) == 3


def test_closing_quote_stays_and_question_marks_split():
    raw = "他说:“好的。”然后走了。如何回收、处置、利用?曾丽丽认为……于是同意!"
    cleans = [s.clean for s in document_spans("x", raw).sentences]
    assert cleans == ["他说：“好的。”", "然后走了。", "如何回收、处置、利用？", "曾丽丽认为……",
                      "于是同意！"]


def test_long_sentence_split_at_semicolon():
    parts = [f"第{n}条加强基础能力建设和重视高职中职教育衔接工作的建议{n}" for n in "一二三四五六"]
    raw = "；".join(parts) + "。"
    short = "甲；乙。"
    sents = document_spans("x", raw + short).sentences
    assert len(sents) == 7
    assert all(s.clean.endswith(("；", "。")) for s in sents)
    assert sents[-1].clean == "甲；乙。"


def test_caption_interrupting_text_is_not_joined():
    raw = "“通过举办这次大会,让更多\n\n\n\n辽源市政协九届四次常委会暨专题议政性常委会。\n\n业内人士看到东丰的梅花鹿。"
    cleans = [s.clean for s in document_spans("x", raw).sentences]
    assert cleans == ["“通过举办这次大会，让更多", "辽源市政协九届四次常委会暨专题议政性常委会。",
                      "业内人士看到东丰的梅花鹿。"]


def test_interleaved_paragraph_fragments_are_kept_separate():
    raw = ("建议:健全机制;以县(区)为单位,避免造成权力虚置;推\n\n"
           "近年来,我市深入学习贯彻法治思想,不断推动法治政府建设实现新突破,以\n\n"
           "进资源、服务、管理下沉,使乡(镇)人民政府的权责与拥有的资源相匹配。")
    cleans = [s.clean for s in document_spans("x", raw).sentences]
    assert not any("推近年来" in c for c in cleans)
    assert not any("以进资源" in c for c in cleans)
    assert cleans[-1].startswith("进资源")


def test_jump_marker_and_masthead_are_furniture():
    raw = ("吉D微风\n\nLIAO YUAN RI BAO\n\n2021年1月27日 星期三\n\n新闻热线:0437-3249118\n\n"
           "开好头 起好步\n\n正文第一句。五年来,我们深入学习, (下转第三版)")
    layout = document_spans("x", raw)
    text = "".join(s.text for s in layout.sentences)
    for bad in ("吉D微风", "LIAO", "星期三", "0437", "下转"):
        assert bad not in text
    assert {r for _, _, r in layout.dropped} == {"furniture"}
    assert layout.sentences[0].clean == "开好头起好步"


def test_repeated_block_indexed_once():
    block = "关键词:职业教育\n\n职业教育是国民教育体系的重要组成部分。\n\n近年来,辽源职业教育得到高度重视。\n\n"
    raw = "标题\n\n" + block + "中间一段独立的话。\n\n" + block + "结尾。"
    layout = document_spans("x", raw)
    cleans = [s.clean for s in layout.sentences]
    assert cleans.count("职业教育是国民教育体系的重要组成部分。") == 1
    repeats = [d for d in layout.dropped if d[2].startswith("repeat of ")]
    assert len(repeats) == 1
    first = raw.index("关键词")
    assert repeats[0][2] == f"repeat of {first}"
    assert raw[repeats[0][0]:repeats[0][1]].startswith("关键词")


def test_short_repeated_heading_is_kept():
    raw = "关键词:产业\n\n第一段。\n\n关键词:产业\n\n第二段不同。"
    cleans = [s.clean for s in document_spans("x", raw).sentences]
    assert cleans.count("关键词：产业") == 2


def test_find_repeats_thresholds():
    keys = ["a" * 10, "b" * 10, "c", "a" * 10, "b" * 10, "d" * 50, "x", "d" * 50]
    assert find_repeats(keys) == [(3, 2, 0), (7, 1, 5)]
    assert find_repeats(["ab", "ab"]) == []


def test_split_clauses_verbatim():
    raw = "前文。我们要,坚持守正创新;推动发展:好的。"
    layout = document_spans("x", raw)
    sent = layout.sentences[1]
    clauses = split_clauses(sent)
    assert [c.clean for c in clauses] == ["我们要，", "坚持守正创新；", "推动发展：", "好的。"]
    for c in clauses:
        assert raw[c.start:c.end] == c.text
    assert split_clauses(layout.sentences[0]) == [layout.sentences[0]]


def test_empty_and_furniture_only():
    assert document_spans("x", "").sentences == []
    assert document_spans("x", "\n\n  \n").sentences == []
    only = document_spans("x", "新闻热线:0437-3249118\n")
    assert only.sentences == [] and only.dropped


# --- invariants over the real archive -------------------------------------------------------------

@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.name[:3])
def test_seed_invariants(path):
    raw, layout = _seed(path.name[:3])
    assert layout.sentences
    assert len(layout.sentences) == len(layout.paragraph_ids) == len(layout.headings)
    prev_end = -1
    for s in layout.sentences:
        assert isinstance(s, Span) and s.doc_id == path.stem
        assert raw[s.start:s.end] == s.text
        assert s.text == s.text.strip() and s.text
        assert "\n" not in s.clean and s.clean
        assert clean_with_offsets(raw, s.start, s.end)[0] == s.clean
        assert s.start >= prev_end
        prev_end = s.end
    assert layout.paragraph_ids == sorted(layout.paragraph_ids)
    for ds, de, reason in layout.dropped:
        assert reason == "furniture" or reason.startswith("repeat of ")
        for s in layout.sentences:
            assert s.end <= ds or s.start >= de


def test_seed_000_broken_sentence_joined_and_summary_once():
    raw, layout = _seed("000")
    hits = [s for s in layout.sentences if "重大决策部署同向同行" in s.clean]
    assert len(hits) == 1
    assert "\n" in hits[0].text  # it really crosses the layout break
    cleans = [s.clean for s in layout.sentences]
    assert cleans.count("关键词：职业教育") == 1
    assert sum("直抒胸臆建真言" in c for c in cleans) == 1
    assert sum(c.startswith("职业教育是国民教育体系") for c in cleans) == 1
    assert sum("政协委员孟广友" in c for c in cleans) == 1
    assert any(c.startswith("近年来，我市高度重视乡村建设，以实施农村厕所革命") for c in cleans)
    repeats = [d for d in layout.dropped if d[2].startswith("repeat of ")]
    assert len(repeats) == 4  # two later copies, each = heading block + body block
    assert all(line_of(raw, d[0]) > 139 for d in repeats)


def test_seed_004_repeated_paragraphs_once():
    _, layout = _seed("004")
    cleans = [s.clean for s in layout.sentences]
    assert sum(c.startswith("定期召开各民主党派、工商联秘书长联席会议") for c in cleans) == 1
    assert sum(c.startswith("政协委员来自各行各业") for c in cleans) == 1
    assert not any("委员工体优势" in c for c in cleans)


def test_seed_002_furniture_dropped():
    raw, layout = _seed("002")
    joined = "\n".join(s.text for s in layout.sentences)
    for bad in ("吉D微风", "LIAO YUAN", "E-mail", "jl_lyrb@126.com", "新闻热线", "0437-3249118",
                "http://", "国内统一刊号", "总第8205期", "下转第三版"):
        assert bad not in joined
    assert layout.sentences[0].text.startswith("出席省十三届人大四次会议")


def test_seed_001_interleaved_fragments():
    _, layout = _seed("001")
    cleans = [s.clean for s in layout.sentences]
    assert not any("推近年来" in c for c in cleans)
    assert any(c.startswith("进资源、服务、管理下沉") for c in cleans)
    assert any(c.startswith("程医疗服务") for c in cleans)
