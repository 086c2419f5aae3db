"""Ingestion: readers per format, encodings, radical folding, wrap rejoining, ids and folder
scans, preparation, and chunking in linear time."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from rag.errors import (BadDocumentIdError, CorpusError, EncryptedDocumentError, NoTextError,
                        UndecodableTextError, UnsupportedFormatError)
from rag.ingest.ids import check_doc_id, doc_id_for, scan_folder
from rag.ingest.metadata import extract_date, extract_title
from rag.ingest.normalize import RADICAL_SUPPLEMENT, fold_cjk_variants, rejoin_wrapped_lines
from rag.ingest.prepare import load_documents, make_document, prepare_document
from rag.ingest.readers import decode_text, read_bytes, read_file
from rag.tokenize import tokenize

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SEEDS = Path(__file__).resolve().parent.parent / "seeds"


# --- readers ------------------------------------------------------------------------------------

def test_txt_stays_the_decoded_file_so_seed_offsets_never_move():
    for path in SEEDS.glob("*.txt"):
        assert read_file(path).text == path.read_bytes().decode("utf-8")


def test_utf8_bom_and_crlf_are_kept_utf16_bom_is_dropped():
    assert decode_text("\ufeff标题\r\n正文。".encode("utf-8")) == ("\ufeff标题\r\n正文。", "utf-8")
    assert decode_text("标题\n正文。".encode("utf-16")) == ("标题\n正文。", "utf-16")


@pytest.mark.parametrize("text", ["坏文件", "标题\n\n正文。", "西安区新增城市绿地面积12公顷。"])
def test_gb_encoded_text_is_detected(text):
    assert decode_text(text.encode("gbk")) == (text, "gb18030")
    assert decode_text(text.encode("gb18030")) == (text, "gb18030")


@pytest.mark.parametrize("text", ["龑䶮䶵，辽源市新增公园。", "䶮龑的名字。", "辽源䶮"])
def test_gb18030_text_with_extension_a_characters_is_not_taken_for_utf16(text):
    """Defect found in review: charset-normalizer preferred UTF-16-BE (no BOM, "no chaos") for
    short GB18030 texts with CJK Extension A characters, storing garbage."""
    assert decode_text(text.encode("gb18030"), "x.txt") == (text, "gb18030")


def test_undecodable_bytes_are_a_clear_error():
    with pytest.raises(UndecodableTextError, match="not UTF-8"):
        decode_text(bytes(range(128, 256)) * 3, "x.txt")


def test_pdf_text_layer_pages_radicals_and_wraps():
    stored = read_file(FIXTURES / "report.pdf")
    assert stored.format == "pdf" and len(stored.pages) == 2 and stored.pages[0] == 0
    text = stored.text
    assert "民生实事项目共计二十六项" in text  # ⺠ U+2EA0, ⼗ U+2F17 folded; the wrap joined
    assert "改造工程完成投资" in text  # ⼯ U+2F2F folded
    assert not any(0x2E80 <= ord(ch) <= 0x2FDF for ch in text)
    assert "正在收尾" in text  # a sentence broken across two lines reads as one
    assert text.index("二十六项") >= stored.pages[1] > text.index("四万余户")
    assert "民生" in tokenize(text[stored.pages[1]:])


def test_docx_paragraphs_and_table_rows_in_order():
    stored = read_file(FIXTURES / "notice.docx")
    lines = stored.text.split("\n")
    assert lines[0] == "东辽县梅花鹿产业发展情况通报"
    assert "鹿茸深加工企业 | 37家" in lines
    assert lines[-1] == "以上数据由县农业农村局提供。"
    assert stored.title == "梅花鹿产业通报"


def test_html_keeps_the_article_only():
    stored = read_file(FIXTURES / "page.html")
    assert "藏书达到86万册" in stored.text
    for furniture in ("首页", "优惠券", "版权所有", "备案号"):
        assert furniture not in stored.text
    assert stored.title.startswith("辽源市图书馆新馆开馆")


def test_gb18030_file():
    stored = read_file(FIXTURES / "gb18030.txt")
    assert stored.encoding == "gb18030" and "新增城市绿地面积12公顷" in stored.text


@pytest.mark.parametrize("name, error, words", [
    ("scan.pdf", NoTextError, "no text layer"),
    ("locked.pdf", EncryptedDocumentError, "encrypted"),
])
def test_unreadable_pdfs_are_clear_per_file_errors(name, error, words):
    with pytest.raises(error, match=words) as err:
        read_file(FIXTURES / name)
    assert name in err.value.message


def test_unknown_format_and_broken_files(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="unknown format"):
        read_bytes(b"\x89PNG", "photo.png")
    with pytest.raises(NoTextError):
        read_bytes(b"   \n", "empty.txt")
    from rag.errors import IngestError

    with pytest.raises(IngestError, match="not a readable"):
        read_bytes(b"not a zip", "broken.docx")
    with pytest.raises(IngestError, match="not a readable PDF"):
        read_bytes(b"%PDF-1.4 garbage", "broken.pdf")


# --- character and line repairs -----------------------------------------------------------------

def test_radicals_fold_one_for_one():
    assert fold_cjk_variants("⼯作⺠生⻓春⻔⻢路") == "工作民生长春门马路"
    sample = "".join(chr(c) for c in range(0x2E80, 0x2FE0)) + "abc，。"
    assert len(fold_cjk_variants(sample)) == len(sample)
    for radical, ideograph in RADICAL_SUPPLEMENT.items():
        assert unicodedata.name(radical).startswith("CJK RADICAL")
        assert 0x3400 <= ord(ideograph) <= 0x9FFF, radical


def test_search_tokens_of_radical_text_match_normal_text():
    """A question typed with normal characters finds text stored with radical code points (.txt
    files keep them verbatim; cleanup folds them for the tokenizer and the embedder)."""
    from rag.text import clean_with_offsets

    raw = "推进⺠生⼯程建设。"
    clean, offsets = clean_with_offsets(raw)
    assert clean == "推进民生工程建设。" and len(offsets) == len(clean)
    assert "民生" in tokenize(clean)


def test_rejoin_wrapped_lines():
    page = ("今年全市民生实事项目共计二十六项，截至十一月底已完成二十四项，其余两项正在\n"
            "收尾。新建口袋公园十八个。\n"
            "\n"
            "二、重点项目\n"
            "城区供热管网改造工程完成投资三亿元，惠及居民四万余户，群众满意度达到九成。\n"
            "下一段从这里开始。")
    out = rejoin_wrapped_lines(page)
    assert "正在收尾。" in out
    assert "\n\n二、重点项目\n城区" in out  # headings and paragraph breaks stay
    assert out.endswith("四万余户，群众满意度达到九成。\n下一段从这里开始。")
    assert rejoin_wrapped_lines("short\nlines") == "short\nlines"
    assert rejoin_wrapped_lines("The quick brown fox jumps over the\nlazy dog again") == \
        "The quick brown fox jumps over the lazy dog again"


# --- ids and folders ----------------------------------------------------------------------------

def test_ids_are_relative_paths_without_extension(tmp_path):
    (tmp_path / "reports" / "2021").mkdir(parents=True)
    path = tmp_path / "reports" / "2021" / "june.pdf"
    path.write_bytes(b"x")
    assert doc_id_for(path, tmp_path) == "reports/2021/june"
    assert doc_id_for(path, tmp_path / "elsewhere") == "june"
    assert doc_id_for(SEEDS / "000_f5ea1269c607c469.txt", SEEDS) == "000_f5ea1269c607c469"


@pytest.mark.parametrize("bad", ["", "../x", "a/../b", "/abs", "a//b", "a\\b", ".hidden", "x\x00", "%2e",
                                 " pad", "a/", "x" * 300, None, 3])
def test_unusable_ids_are_refused(bad):
    with pytest.raises(BadDocumentIdError):
        check_doc_id(bad)


def test_usable_ids(tmp_path):
    for good in ("000_f5ea1269c607c469", "会议 纪要 v2", "reports/2021/june", "a.b"):
        assert check_doc_id(good) == good


def test_scan_is_recursive_skips_hidden_reports_unknown_and_clashes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("甲", encoding="utf-8")
    (tmp_path / "a.md").write_text("乙", encoding="utf-8")
    (tmp_path / "sub" / "b.html").write_text("<p>丙</p>", encoding="utf-8")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("hidden", encoding="utf-8")
    scan = scan_folder(tmp_path)
    assert list(scan.files) == ["a", "sub/b"]
    reasons = dict(scan.problems)
    assert "unknown format" in reasons[str(tmp_path / "photo.jpg")]
    assert any("same id" in r for r in reasons.values())
    with pytest.raises(CorpusError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    with pytest.raises(CorpusError, match="not a directory"):
        scan_folder(tmp_path / "a.txt")


def test_symlinks_leading_outside_the_corpus_are_refused(tmp_path):
    """Defect: a symlink in the corpus pointing outside it was indexed and quoted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("机密内容。", encoding="utf-8")
    corpus = tmp_path / "corpus"
    (corpus / "inner").mkdir(parents=True)
    (corpus / "ok.txt").write_text("公开内容。", encoding="utf-8")
    (corpus / "link.txt").symlink_to(outside / "secret.txt")
    (corpus / "linkdir").symlink_to(outside)
    (corpus / "inner" / "alias.txt").symlink_to(corpus / "ok.txt")  # inside: allowed
    scan = scan_folder(corpus)
    assert set(scan.files) == {"ok", "inner/alias"}
    refused = " ".join(reason for _, reason in scan.problems)
    assert refused.count("outside the corpus folder") == 2
    assert all("机密" not in d.text for d in load_documents(corpus))


# --- metadata and preparation -------------------------------------------------------------------

def test_titles_and_dates_of_the_seeds():
    docs = {d.doc_id[:3]: d for d in load_documents(SEEDS)}
    assert docs["000"].title == "乘势而上 推动乡村振兴开新局"
    assert docs["003"].title == "中国人民政治协商会议辽源市第八届委员会常务委员会工作报告"
    assert docs["002"].date == "2021-01-27" and docs["003"].date == "2020-01-06"
    assert docs["004"].date is None and docs["000"].date is None
    assert extract_title("正文开始,这里是正文。") == ""
    assert extract_date("标题\n\n——２０２１年１月１２日在会议上\n\n正文。") == "2021-01-12"
    assert extract_date("标题\n\n2021年2月30日\n\n正文。") is None


def test_prepare_keeps_offsets_sections_and_chunk_sentence_ranges():
    doc = load_documents(SEEDS)[0]
    p = prepare_document(doc, "x", 400, 80)
    for s in p.sentences:
        assert doc.text[s.span.start:s.span.end] == s.span.text
    for c in p.chunks:
        inside = p.sentences[c.sentence_lo:c.sentence_hi]
        assert all(c.start <= s.span.start and s.span.end <= c.end for s in inside)
        outside = [s for s in p.sentences if s not in inside]
        assert not any(c.start <= s.span.start and s.span.end <= c.end for s in outside)
        assert sum(c.terms.values()) == len(tokenize(c.retrieval_text))
    assert any(s.section for s in p.sentences) and any(s.heading for s in p.sentences)
    assert p.n_units > 0 and p.unit_df


def test_chunking_time_is_linear_in_document_length(monkeypatch):
    """Defect: section_context rescanned every sentence for each chunk (0.8M characters 14 s,
    1.6M 69 s). Counted, not timed: sentences visited while chunking grow linearly."""
    from rag import chunking
    from rag.text import document_spans
    from rag.types import Document

    visits = {"n": 0}

    class Counting(list):
        def __iter__(self):
            for item in super().__iter__():
                visits["n"] += 1
                yield item

    def visited(paragraphs: int) -> int:
        text = "".join(f"标题{i}\n\n第{i}段正文写了一些内容，用来测试分块。第二句也在这里。\n\n" for i in range(paragraphs))
        layout = document_spans("big", text)
        object.__setattr__(layout, "sentences", Counting(layout.sentences))
        visits["n"] = 0
        chunking.chunk_document(Document("big", "", "", None, text), layout, 60, 10)
        return visits["n"]

    small, large = visited(200), visited(800)
    assert large < 6 * small  # quadratic growth would be ~16x


def test_block_tokenizer_equals_tokenize_on_the_seeds_and_odd_text(seeds_dir):
    """Ingest tokenises each jieba block once (rag.ingest.tokens); the tokens must be exactly
    rag.tokenize.tokenize's, or BM25 and the eval figures would move."""
    from rag.archive import unit_term_counts
    from rag.ingest.tokens import BlockTokenizer
    from rag.tokenize import tokenize

    odd = ["二〇二一年 ＡＢＣ１２３　全角", "C++ 与 C# 的 3.5% 增长-率", "⺠⽣ 工作\r\n第二行\t制表", "😀表情 и кириллица",
           "", "   ", "《十四五》规划（草案）——“两会”", "a.b_c&d e-f", "𠀀扩展字符 㐀 汉字"]
    tokenizer = BlockTokenizer()
    for path in sorted(seeds_dir.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        for part in [text, *text.split("\n")[:80], *odd]:
            assert tokenizer.tokenize(part) == tokenize(part), part[:40]
        assert unit_term_counts(text, tokenizer.tokenize) == unit_term_counts(text)
    assert tokenizer.blocks_cut < tokenizer.blocks_seen  # the memo is used
