"""Tests for rag.corpus: loading, skipping bad files, titles, dates, safe paths."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from rag.corpus import extract_date, extract_title, load_corpus, read_raw, safe_doc_path
from rag.errors import CorpusError, UnknownDocumentError

SEEDS = Path(__file__).resolve().parent.parent / "seeds"


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def test_load_seeds_titles_and_dates():
    docs = load_corpus(SEEDS)
    by_prefix = {d.doc_id[:3]: d for d in docs}
    assert [d.doc_id for d in docs] == sorted(p.stem for p in SEEDS.glob("*.txt"))
    assert by_prefix["000"].title == "乘势而上 推动乡村振兴开新局"
    assert by_prefix["001"].title == "凝聚汇智谋共识 建言献策促发展"
    assert by_prefix["002"].title.startswith("出席省十三届人大四次会议的辽源代表团")
    assert by_prefix["003"].title == "中国人民政治协商会议辽源市第八届委员会常务委员会工作报告"
    assert by_prefix["004"].title == "用新时代“政协实绩”书写高质量“履职答卷”"
    assert by_prefix["002"].date == "2021-01-27"
    assert by_prefix["003"].date == "2020-01-06"
    assert by_prefix["004"].date is None  # only "2023年工作纪实" in the head
    assert by_prefix["000"].date is None
    for d in docs:
        assert d.text == read_raw(d.path)
        assert Path(d.path).is_absolute()
        assert "吉D微风" not in d.title and "LIAO" not in d.title


def test_read_raw_keeps_crlf_and_bom(tmp_path):
    path = _write(tmp_path, "a.txt", "\ufeff标题\r\n正文。")
    assert read_raw(path) == "\ufeff标题\r\n正文。"


def test_skips_non_utf8_with_warning(tmp_path):
    _write(tmp_path, "good.txt", "标题\n\n正文。")
    _write(tmp_path, "bad.txt", "标题".encode("gbk") + b"\xff\xfe")
    _write(tmp_path, "empty.txt", "  \n")
    _write(tmp_path, "notes.md", "ignored")
    skipped: list[tuple[str, str]] = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        docs = load_corpus(tmp_path, skipped=skipped)
    assert [d.doc_id for d in docs] == ["good"]
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert any("bad.txt" in m for m in messages)
    assert any("empty.txt" in m for m in messages)
    assert [name for name, _ in skipped] == ["bad.txt", "empty.txt"]
    assert "UTF-8" in skipped[0][1]


def test_missing_folder_and_file_path_raise(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nope")
    f = _write(tmp_path, "a.txt", "x")
    with pytest.raises(CorpusError, match="not a directory"):
        load_corpus(f)


def test_folder_without_usable_files_raises(tmp_path):
    with pytest.raises(CorpusError, match="no usable"):
        load_corpus(tmp_path)
    _write(tmp_path, "bad.txt", b"\xff\xfe\xfd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CorpusError):
            load_corpus(str(tmp_path))


def test_title_and_date_helpers():
    assert extract_title("\n\n标题 一\n\n正文开始,这里是正文。") == "标题 一"
    assert extract_title("正文开始,这里是正文。") == ""
    assert extract_date("标题\n\n(2020年1月6日在会议上)\n\n正文。") == "2020-01-06"
    assert extract_date("标题\n\n正文说2023年12月14日开会。") is None
    assert extract_date("标题\n\n——２０２１年１月１２日在会议上\n\n正文。") == "2021-01-12"
    assert extract_date("标题\n\n2021年2月30日\n\n正文。") is None


@pytest.mark.parametrize("bad", ["../x", "..", "/etc/passwd", "a/b", "a\\b", "../seeds/000",
                                 "..%2Fx", "%2e%2e", "x\x00", ".hidden", "", " 000", "C:foo",
                                 "nope"])
def test_safe_doc_path_rejects(tmp_path, bad):
    _write(tmp_path, "000.txt", "x")
    _write(tmp_path, "x.txt", "x")
    with pytest.raises(UnknownDocumentError):
        safe_doc_path(tmp_path, bad)


def test_safe_doc_path_accepts_known_stem(tmp_path):
    _write(tmp_path, "000_f5ea.txt", "x")
    assert safe_doc_path(tmp_path, "000_f5ea") == (tmp_path / "000_f5ea.txt").resolve()
    stem = next(SEEDS.glob("*.txt")).stem
    assert safe_doc_path(SEEDS, stem).name == f"{stem}.txt"


def test_safe_doc_path_accepts_any_stem_the_indexer_accepts(tmp_path):
    _write(tmp_path, "会议 纪要 v2.txt", "x")
    assert safe_doc_path(tmp_path, "会议 纪要 v2").name == "会议 纪要 v2.txt"


def test_safe_doc_path_rejects_symlink_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    _write(outside, "secret.txt", "x")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(UnknownDocumentError):
        safe_doc_path(corpus, "link")
