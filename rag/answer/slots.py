"""What a question asks for (its *slot*) and where a sentence holds something of that kind.

A question is about a topic (people, organisations, a subject) and asks for one kind of thing:
an amount of money, a count of something, a rate, a date, a person, an organisation, a place, a
name, a title, a reason... :func:`asked_slots` reads the kinds from the question's interrogative
phrase (``多少钱``, ``多少户``, ``哪年``, ``谁``, ``哪家公司``, ``什么职务``, ``为什么``);
:func:`find_mentions` finds expressions of each kind in a sentence (numbers with their measure
word, dates, percentages, telephone numbers, title nouns, causal connectives; persons,
organisations and places from jieba part-of-speech tags). A sentence *supports* the slot when it
holds a mention of the kind that the question does not already contain.

Word lists come from :mod:`rag.answer.lexicon` (general Chinese; sources there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .lexicon import (CAUSAL_WORDS, CLASSIFIERS, CURRENCY_UNITS, DURATION_UNITS, MEASURE_UNITS,
                      PARTY_NAMES, TITLE_WORDS)

__all__ = ["Slot", "Mention", "SLOT_KINDS", "asked_slots", "find_mentions", "supports"]

#: Every slot kind, in the order features list them.
SLOT_KINDS = ("money", "percent", "count", "number", "year", "date", "duration", "age", "ordinal",
              "phone", "measure", "person", "org", "place", "name", "title", "reason")


@dataclass(frozen=True)
class Slot:
    """An asked-for kind.

    Attributes:
        kind: One of :data:`SLOT_KINDS`.
        unit: For ``count``/``measure``: the measure word asked with (``户`` in ``多少户``); for
            ``org``: the kind of organisation (``学校``, ``公司``, ``党派``); else "".
        at: Offset of the interrogative word in the normalised question.
        end: End offset of the interrogative phrase (``多少名`` in ``多少名学生``).
    """

    kind: str
    unit: str = ""
    at: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Mention:
    """An expression of a slot kind in a normalised text.

    Attributes:
        kind: One of :data:`SLOT_KINDS`.
        start, end: Offsets into the normalised text (code points, half-open).
        text: ``norm[start:end]``.
        unit: The measure word of a number mention ("" if none).
    """

    kind: str
    start: int
    end: int
    text: str
    unit: str = ""


def _alt(words) -> str:
    return "|".join(sorted({re.escape(w) for w in words}, key=len, reverse=True))


_CN_DIGITS = "零〇一二两三四五六七八九十百千"
#: A number: Arabic (``11473``, ``32.6``, ``11,473``) or Chinese numerals, with 万/亿 and 余/多.
NUM = rf"(?:\d+(?:[.,]\d+)*|[{_CN_DIGITS}]{{1,8}})(?:余|多)?(?:万|亿)?(?:余|多)?"
_UNITS_RE = _alt(set(CLASSIFIERS) | set(CURRENCY_UNITS) | set(DURATION_UNITS) | set(MEASURE_UNITS))
_NUMBER_RE = re.compile(rf"({NUM})({_UNITS_RE}|%|％)?")
_PERCENT_RE = re.compile(rf"{NUM}(?:%|％|个百分点|百分点|成(?![为立功绩果效本员])|倍)|百分之[{_CN_DIGITS}\d.点]+")
_YEAR_RE = re.compile(r"(?:19|20)\d{2}年|[一二〇零九]{4}年|去年|今年|前年|明年|上年|当年")
_DATE_RE = re.compile(r"(?:(?:19|20)\d{2}年)?\d{1,2}月(?:\d{1,2}[日号])?|\d{1,2}[日号](?=[至到—-])|"
                      r"[一二三四五六七八九十]{1,3}月[一二三四五六七八九十]{1,3}[日号]|[上中下]旬|春节|元旦|国庆")
_PHONE_RE = re.compile(r"\d{3,4}-\d{7,8}|(?<!\d)\d{7,11}(?!\d)")
_ORDINAL_RE = re.compile(rf"第[{_CN_DIGITS}\d]+(?:位|名)?|首位|榜首|首个|首家|首批|前列|之首")
_AGE_RE = re.compile(rf"{NUM}(?:岁|周岁)|出生|生于|年生")
_TITLE_RE = re.compile(_alt(TITLE_WORDS))
_REASON_RE = re.compile(_alt(CAUSAL_WORDS))
_QUOTE_RE = re.compile(r"“[^“”]{2,30}”|《[^《》]{2,40}》|「[^「」]{2,30}」|\"[^\"]{2,30}\"")
_PARTY_RE = re.compile(_alt(PARTY_NAMES))

_DURATION_SET = frozenset(DURATION_UNITS)
_CURRENCY_SET = frozenset(CURRENCY_UNITS)
_MEASURE_SET = frozenset(MEASURE_UNITS)

# --- question side ------------------------------------------------------------------------

_Q = r"(?:多少|几)"
#: Interrogative words (疑问代词) that mark where the asked-for part sits in a question.
_WH_RE = re.compile(r"多少|几|哪|谁|什么|何|啥|多[大长高远重久]")
#: (kind, pattern) in priority order; a unit group ``(?P<unit>...)`` names the measure word.
#: Every 什么 also matches its colloquial form 啥 (《现代汉语词典》 啥: 什么), so 啥职务 asks what
#: 什么职务 asks.
_QUESTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((k, re.compile(p.replace("什么", "(?:什么|啥)")))
                                                                    for k, p in (
    ("phone", r"电话|手机号|号码|热线|联系方式"),
    ("age", r"多大年纪|多大岁数|年龄|年纪|几岁|多少岁|多大了|哪一?年出生|出生于?哪一?年|出生年[份月]|生日|哪年生"),
    ("year", r"哪一?年|什么年份|哪个年份|几几年|(?:出生|成立|建成|建校|创办|创建|始建|开业|投用|投入使用)"
             r"(?:于|是|在)?(?:什么时候|啥时候|何时)"),
    ("date", r"哪一?天|几月几[号日]|几号|几日|哪个月|几月份?|什么时候|啥时候?|几时|多会儿|哪会儿|何时|什么时间|"
             r"什么日子|日期|哪个时间"),
    ("duration", rf"多久|多长时间|(?<![这近前那过])(?:{_Q}个?(?:工作日|小时|天|星期|周|月)|{_Q}年(?!级))"),
    ("percent", rf"百分之{_Q}|{_Q}个百分点|几成|(?:比例|比率|比重|占比|增速|增幅|增长率|[率])(?:是|有|为|达到?)?{_Q}|"
                rf"(?:增长|提高|下降|减少|上涨|涨|降低|提升|增加)了?{_Q}(?![个件人户家所项名次条篇例期只头吨亩元万亿])"),
    ("ordinal", r"第几|排名|名次|位次|排在哪"),
    ("money", rf"多少钱|{_Q}(?:块|元|万元?|亿元?|千元)|(?:资金|投资|经费|金额|价格|费用|收入|产值|总值|成本|补贴|"
              rf"奖金|款|预算|规模|税费|营业额|销售额|总额)(?:是|有|达到?|为|共|一共|总共)?{_Q}|"
              rf"(?:花|投|捐|拨|筹|贷|募|赔|补|免|减|奖|卖|挣|赚)了?{_Q}|价"),
    ("measure", rf"{_Q}(?P<unit>{_alt(MEASURE_UNITS)})|多远|多长|多高|多重|多大面积"),
    ("count", rf"{_Q}(?P<unit>{_alt(set(CLASSIFIERS) - _CURRENCY_SET - _DURATION_SET - _MEASURE_SET)})|"
              rf"(?:人口|人数|人员)(?:是|有|达到?|为|共|一共|总共)?{_Q}(?P<people>)"),
    ("person", rf"谁|哪位|什么人|何人|哪个人|哪名|作者|姓名|哪(?:个|位|名|一位)?(?:{_alt(TITLE_WORDS)}|领导|人)"),
    ("org", r"哪(?:家|个|一家|所)?(?P<unit>公司|企业|单位|部门|厂家?|机构|学校|大学|学院|医院|党派|银行|协会|组织)|"
            r"什么(?P<unit2>公司|企业|单位|部门|机构|学校|党派|组织|厂家)|(?P<school>哪所)|哪家|"
            r"(?P<maker>厂家|厂商|生产商|制造商|生产企业|生产的)"),
    ("place", r"哪里|哪儿|在哪|什么地方|何地|何处|哪个(?:省|市|县|区|镇|乡|村|地方|国家|城市)|籍贯"),
    ("title", r"什么职务|什么职位|担任什么|什么职|什么身份|什么官|职务是|职位是|任什么|[干做]什么(?:的|工作)"),
    ("name", r"叫什么|叫啥|啥名|什么名字|名称|主题|口号|称号|题目|标题|名字|品牌|什么平台|哪个平台|"
             r"什么荣誉|什么奖|哪个项目"),
    ("reason", r"为什么|为何|为啥|原因|怎么会|何故"),
    ("number", rf"{_Q}|多大|多高"),
))


def asked_slots(question_norm: str) -> tuple[Slot, ...]:
    """The kinds a question asks for, in question order (at most one per kind).

    Args:
        question_norm: The question in matching form (:func:`rag.answer.textutil.norm`).

    Returns:
        Slots; empty for questions asking for a description or a list (``如何``, ``哪些建议``).
        ``number`` is only reported when no more specific numeric kind was found.
    """
    found: list[tuple[int, Slot]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _QUESTION_PATTERNS:
        for m in pattern.finditer(question_norm):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            groups = m.groupdict()
            unit = groups.get("unit") or groups.get("unit2") or ""
            if groups.get("people") is not None:
                unit = "人"
            elif groups.get("school"):
                unit = "学校"
            elif groups.get("maker"):
                unit = "公司"
            wh = _WH_RE.search(m.group())
            found.append((m.start(), Slot(kind, unit, m.start() + (wh.start() if wh else 0), m.end())))
            taken.append((m.start(), m.end()))
    kinds: list[Slot] = []
    for _, slot in sorted(found, key=lambda t: t[0]):
        if all(s.kind != slot.kind for s in kinds):
            kinds.append(slot)
    numeric = {"money", "percent", "count", "year", "date", "duration", "age", "ordinal", "measure", "phone"}
    if any(s.kind in numeric for s in kinds):
        kinds = [s for s in kinds if s.kind != "number"]
    return tuple(kinds)


# --- sentence side ------------------------------------------------------------------------


def find_mentions(text_norm: str, persons=(), orgs=(), places=(), others=()) -> tuple[Mention, ...]:
    """Expressions of every slot kind in a normalised text.

    Args:
        text_norm: Text in matching form.
        persons, orgs, places, others: ``(start, end)`` offsets (into ``text_norm``) of words
            tagged as persons, organisations, places and other proper nouns (jieba ``nz``).

    Returns:
        Mentions sorted by start; one piece of text may carry several kinds (``2020年`` is a
        year; ``59个`` is a count with unit 个 and a number).
    """
    out: list[Mention] = []

    def add(kind: str, m, unit: str = "") -> None:
        out.append(Mention(kind, m.start(), m.end(), m.group(), unit))

    years = [m for m in _YEAR_RE.finditer(text_norm)]
    dates = [m for m in _DATE_RE.finditer(text_norm)]
    for m in years:
        add("year", m)
        add("date", m)
    for m in dates:
        add("date", m)
    in_date = [(m.start(), m.end()) for m in years + dates]
    for m in _NUMBER_RE.finditer(text_norm):
        value, unit = m.group(1), m.group(2) or ""
        if not any(ch.isdigit() for ch in value) and not unit:
            continue  # a bare Chinese numeral (一, 十) is a word, not a number
        if any(a <= m.start() and m.end() <= b for a, b in in_date):
            continue
        if value in ("一", "两") and unit in ("个", "些", "种", "年", "天"):
            continue  # 一个, 一年: articles and phrases more than counts
        if text_norm[m.start() - 1:m.start()] == "第":
            continue  # ordinals are not counts
        add("number", m, unit)
        if unit in _CURRENCY_SET:
            add("money", m, unit)
        elif unit in _DURATION_SET:
            add("duration", m, unit)
        elif unit in _MEASURE_SET:
            add("measure", m, unit)
            add("count", m, unit)
        elif unit in ("%", "％"):
            pass
        elif unit:
            add("count", m, unit)
    for m in _PERCENT_RE.finditer(text_norm):
        add("percent", m)
    for m in _ORDINAL_RE.finditer(text_norm):
        add("ordinal", m)
    for m in _AGE_RE.finditer(text_norm):
        add("age", m)
    for m in _PHONE_RE.finditer(text_norm):
        add("phone", m)
    for m in _TITLE_RE.finditer(text_norm):
        add("title", m)
    for m in _REASON_RE.finditer(text_norm):
        add("reason", m)
    for m in _QUOTE_RE.finditer(text_norm):
        add("name", m)
    for m in _PARTY_RE.finditer(text_norm):
        add("org", m)
        add("name", m)
    for kind, spans in (("person", persons), ("org", orgs), ("place", places)):
        for a, b in spans:
            out.append(Mention(kind, a, b, text_norm[a:b]))
            out.append(Mention("name", a, b, text_norm[a:b]))
    for a, b in others:
        out.append(Mention("name", a, b, text_norm[a:b]))
    out.sort(key=lambda m: (m.start, m.end, m.kind))
    return tuple(out)


_PEOPLE_UNITS = ("人", "人次", "万人", "名", "位")
#: Heads an organisation name must end with to answer ``哪所学校`` / ``哪家公司`` / ``哪个党派``.
_ORG_HEADS = {
    "学校": ("学校", "大学", "学院", "中学", "小学", "职校", "幼儿园", "分校"),
    "大学": ("大学", "学院"), "学院": ("学院", "大学"),
    "公司": ("公司", "企业", "集团", "厂", "工厂", "厂家", "药业", "科技", "制药"),
    "企业": ("公司", "企业", "集团", "厂", "工厂"), "厂": ("厂", "公司", "企业", "集团"),
    "厂家": ("厂", "公司", "企业", "集团"), "医院": ("医院", "卫生院", "诊所"),
    "银行": ("银行",), "党派": PARTY_NAMES,
}


def supports(slot: Slot, mention: Mention, question_norm: str) -> bool:
    """Whether ``mention`` answers ``slot``: same kind (and, for a count, a compatible measure
    word), and not already part of the question."""
    if mention.kind != slot.kind:
        return False
    if mention.text in question_norm:
        return False
    if slot.kind == "org" and slot.unit in _ORG_HEADS:
        return mention.text.endswith(_ORG_HEADS[slot.unit]) or mention.text in _ORG_HEADS[slot.unit]
    if slot.kind in ("count", "measure") and slot.unit:
        if slot.kind == "count" and slot.unit == "个":
            return True  # 个 is the general classifier: 几个委员 is answered by 3名
        if slot.unit in _PEOPLE_UNITS:
            return mention.unit in _PEOPLE_UNITS or mention.unit.endswith("人")
        return mention.unit == slot.unit or mention.unit.endswith(slot.unit)
    return True
