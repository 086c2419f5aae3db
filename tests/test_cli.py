import io
import json
import subprocess
import sys

import pytest

from rag import cli
from rag.config import PROJECT_ROOT

from .conftest import write_corpus
from .fakes import FakeEmbedder


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """CLI runs in-process over the tiny corpus with the fake embedder."""
    import rag.embedding

    corpus = write_corpus(tmp_path / "corpus")
    monkeypatch.setattr(rag.embedding, "Embedder", lambda settings: FakeEmbedder())
    monkeypatch.setenv("RAG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAG_CORPUS_DIR", str(corpus))
    monkeypatch.setenv("RAG_CHUNK_SIZE", "60")
    monkeypatch.setenv("RAG_CHUNK_OVERLAP", "0")
    return corpus


@pytest.mark.parametrize("question", ["", "   ", "\t\n"])
def test_empty_question_exits_2_with_message(question, capsys):
    assert cli.main(["ask", question]) == 2
    assert "empty" in capsys.readouterr().err


def test_too_long_question_exits_2(capsys, fake_env):
    assert cli.main(["ask", "问" * 501]) == 2
    err = capsys.readouterr().err
    assert "501" in err and "500" in err


def test_missing_corpus_folder_is_a_clear_error(tmp_path, capsys, fake_env):
    assert cli.main(["ask", "--corpus", str(tmp_path / "nope"), "梅花鹿"]) == 2
    assert "nope" in capsys.readouterr().err


def test_ask_json_contract(fake_env, capsys):
    assert cli.main(["ask", "--json", "--top-k", "3", "梅花鹿存栏量有多少"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"question", "answer", "abstained", "citations", "hits", "timings_ms"}
    assert set(out["timings_ms"]) >= {"embed", "retrieve", "answer", "total"}
    assert len(out["hits"]) <= 3
    for item in out["hits"] + out["citations"]:
        raw = (fake_env / f"{item['doc_id']}.txt").read_bytes().decode("utf-8")
        assert raw[item["start"]:item["end"]] == item["text"]
    assert [h["rank"] for h in out["hits"]] == list(range(1, len(out["hits"]) + 1))


def test_ask_stdin_stream_keeps_order_and_survives_bad_lines(fake_env, capsys, monkeypatch):
    questions = ["梅花鹿存栏量有多少", "", "政协收到多少件提案"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(questions) + "\n"))
    status = cli.main(["ask", "--json", "-"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["question"] for r in lines] == questions
    assert "error" in lines[1] and "error" not in lines[0] and "error" not in lines[2]
    assert status == 2


def test_ask_readable_output_lists_sources(fake_env, capsys):
    assert cli.main(["ask", "梅花鹿存栏量有多少"]) == 0
    out = capsys.readouterr().out
    assert "b_deer.txt:" in out


def test_index_command_reports_counts(fake_env, capsys):
    assert cli.main(["index", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 3 and info["chunks"] > 0


def test_gbk_file_is_read_and_an_undecodable_one_is_skipped_with_a_message(fake_env, capsys):
    (fake_env / "gbk.txt").write_bytes("坏文件\n\n这是一个GBK编码的文件。".encode("gbk"))
    (fake_env / "broken.txt").write_bytes(bytes(range(128, 256)) * 3)
    assert cli.main(["index", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["documents"] == 4
    assert "broken.txt" in captured.err and "UTF-8" in captured.err


def test_bad_top_k_is_rejected(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["ask", "--top-k", "0", "梅花鹿"])
    assert err.value.code == 2


@pytest.mark.slow
def test_example_question_cites_both_vocational_education_sources():
    """The product card's example, end to end through the installed console script."""
    rag = PROJECT_ROOT / ".venv" / "bin" / "rag"
    cmd = [str(rag)] if rag.exists() else [sys.executable, "-m", "rag"]
    proc = subprocess.run(cmd + ["ask", "--json", "委员对职业教育提了什么建议"], capture_output=True,
                          text=True, timeout=600, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    docs = {c["doc_id"][:3] for c in out["citations"]} | {h["doc_id"][:3] for h in out["hits"]}
    assert {"000", "001"} <= docs
    for item in out["hits"] + out["citations"]:
        raw = (PROJECT_ROOT / "seeds" / f"{item['doc_id']}.txt").read_bytes().decode("utf-8")
        assert raw[item["start"]:item["end"]] == item["text"]


def test_bad_setting_value_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("RAG_TOP_K", "abc")
    assert cli.main(["ask", "梅花鹿"]) == 2
    assert "RAG_TOP_K" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, b"{not json\n", "坏".encode("gbk"), b""])
def test_eval_with_bad_gold_file_is_a_clear_error(tmp_path, capsys, fake_env, content):
    gold = tmp_path / "gold.jsonl"
    if content is not None:
        gold.write_bytes(content)
    assert cli.main(["eval", "--gold", str(gold)]) == 2
    assert "gold" in capsys.readouterr().err


# --- bad text (defect 1) and closed pipes (defect 8) ---------------------------------------------

@pytest.mark.parametrize("question", ["\ud800", "职业\udfff教育", "\udced\udca0\udc80"])
def test_lone_surrogate_question_exits_2_with_message(question, capsys, fake_env):
    """Defect 1: a lone surrogate was a traceback and exit 1. (``\\udced\\udca0\\udc80`` is how
    Python decodes the argv bytes ED A0 80.)"""
    assert cli.main(["ask", question]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the question has ") and "Traceback" not in err
    assert "surrogate" in err or "not valid UTF-8" in err


def _fake_cli(tmp_path, corpus) -> tuple[list[str], dict]:
    """Command and environment running ``rag`` in a subprocess with the FakeEmbedder."""
    import os

    code = ("import sys, rag.embedding; from tests.fakes import FakeEmbedder; "
            "rag.embedding.Embedder = lambda settings: FakeEmbedder(); "
            "from rag.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "RAG_HOME": str(tmp_path / "home"), "RAG_CORPUS_DIR": str(corpus),
           "RAG_CHUNK_SIZE": "60", "RAG_CHUNK_OVERLAP": "0", "PYTHONPATH": str(PROJECT_ROOT)}
    return [sys.executable, "-c", code], env


def test_undecodable_argv_bytes_exit_2(tmp_path, fake_env):
    """Defect 1 through a real process: argv bytes ED A0 80 (not UTF-8)."""
    cmd, env = _fake_cli(tmp_path, fake_env)
    proc = subprocess.run(cmd + ["ask", b"\xed\xa0\x80\xe5\xbb\xba\xe8\xae\xae"], capture_output=True,
                          env=env, timeout=120, cwd=PROJECT_ROOT)
    assert proc.returncode == 2, proc.stderr
    stderr = proc.stderr.decode("utf-8")
    assert "0xED" in stderr and "not valid UTF-8" in stderr and "Traceback" not in stderr


def test_ask_stdin_undecodable_line_is_an_error_record(fake_env, capsys, monkeypatch):
    """Defect 1: one undecodable line in ``rag ask --json -`` killed the whole batch."""
    data = ("梅花鹿存栏量有多少\n".encode() + b"\xed\xa0\x80\xe5\xbb\xba\xe8\xae\xae\n"
            + "坏".encode("gbk") + b"\n" + "政协收到多少件提案\r\n".encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbf" + data), encoding="utf-8"))
    status = cli.main(["ask", "--json", "-"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 4 and status == 2
    assert records[0]["question"] == "梅花鹿存栏量有多少" and "error" not in records[0]
    assert records[3]["question"] == "政协收到多少件提案" and "error" not in records[3]
    assert "line 2 is not valid UTF-8 (byte 0xED at offset 0)" == records[1]["error"]
    assert records[1]["question"].startswith("\ufffd") and records[1]["answer"] == ""
    assert "line 3 is not valid UTF-8" in records[2]["error"]


def _closed_pipe():
    """A pipe whose read end is already closed: every write to the other end fails (EPIPE)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize("args", [["ask", "梅花鹿存栏量有多少"], ["ask", "--json", "梅花鹿存栏量有多少"]])
def test_output_into_a_closed_pipe_exits_quietly(tmp_path, fake_env, args):
    """Defect 8: ``rag ask ... | head`` ended in a BrokenPipeError traceback."""
    import os

    cmd, env = _fake_cli(tmp_path, fake_env)
    write_end = _closed_pipe()
    try:
        proc = subprocess.run(cmd + args, stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=120,
                              cwd=PROJECT_ROOT)
    finally:
        os.close(write_end)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr
    assert proc.returncode == 141


def test_stream_into_head_stops_quietly(tmp_path, fake_env):
    """``printf ... | rag ask --json - | head -1``: the reader leaves after one line."""
    cmd, env = _fake_cli(tmp_path, fake_env)
    questions = "".join(f"梅花鹿存栏量有多少{i}\n" for i in range(300)).encode()
    proc = subprocess.Popen(cmd + ["ask", "--json", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=PROJECT_ROOT)
    proc.stdin.write(questions)
    proc.stdin.close()
    first = proc.stdout.readline()
    proc.stdout.close()  # like head -1
    returncode = proc.wait(timeout=120)
    stderr = proc.stderr.read().decode("utf-8", "replace")
    assert json.loads(first)["question"] == "梅花鹿存栏量有多少0"
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr
    assert returncode == 141
