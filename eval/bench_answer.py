"""Benchmark of the answer stage (``timings_ms.answer``) beside a baseline measured in the same run.

The pipeline runs once per gold question to get the query vector, the hits and the candidate
sentences (exactly as ``Pipeline.ask`` passes them to the answerer); then only the answer stage
is timed, for

* ours: :class:`rag.answer.Answerer` (fitted model), warmed up as the pipeline does it;
* baseline: the hand-tuned answerer this package replaced, loaded from the git history
  (``git show <rev>:rag/answerer.py``, default ``30f6eae``, its last version), warmed up the same way.

Two passes over the questions: *first* (each question's first answer in a fresh process after
warm-up, what ``rag eval`` measures) and *repeat* (the same inputs again). Prints p50/p95 in ms
and the ratio ours/baseline. Timings are noisy on a shared 2-core machine: compare the ratio.

Usage: ``.venv/bin/python eval/bench_answer.py [--gold eval/heldout.jsonl ...] [--rev main]``
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _baseline_module(rev: str):
    """The old ``rag/answerer.py`` at ``rev`` as module ``rag.answerer_baseline`` (its relative
    imports resolve inside the installed ``rag`` package)."""
    source = subprocess.run(["git", "show", f"{rev}:rag/answerer.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    tmp = Path(tempfile.mkdtemp()) / "answerer_baseline.py"
    tmp.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("rag.answerer_baseline", tmp)
    module = importlib.util.module_from_spec(spec)
    sys.modules["rag.answerer_baseline"] = module
    spec.loader.exec_module(module)
    return module


def _time(answerer, inputs, archive, to_candidate=None) -> list[float]:
    out = []
    for question, qv, hits, cands in inputs:
        if to_candidate is not None:
            cands = [to_candidate(c) for c in cands]
        started = time.perf_counter()
        answerer.answer(question, qv, hits, cands, archive)
        out.append((time.perf_counter() - started) * 1000.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gold", nargs="+", default=[str(ROOT / "eval" / "gold.jsonl"), str(ROOT / "eval" / "heldout.jsonl")])
    # 30f6eae: the last commit with the hand-tuned answerer in rag/answerer.py.
    ap.add_argument("--rev", default="30f6eae", help="git revision of the baseline rag/answerer.py")
    args = ap.parse_args(argv)

    from rag.answer import Answerer
    from rag.archive import InMemoryArchive
    from rag.config import Settings
    from rag.gold import load_gold
    from rag.pipeline import Pipeline

    settings = Settings.from_env()
    pipeline = Pipeline(settings).warm_up()
    inputs = []
    for path in args.gold:
        for q in load_gold(path):
            text = q.question.strip()
            qv = pipeline.embed_question(text)
            hits = pipeline.retrieve(text, top_k=10, query_vector=qv)
            evidence, candidates = pipeline.evidence(text, qv, hits)
            inputs.append((text, qv, evidence, candidates))
    documents = {info.doc_id: pipeline.store.document(info.doc_id) for info in pipeline.documents()}
    del pipeline

    old = _baseline_module(args.rev)
    old_settings = settings.replace(abstain_threshold=0.42)  # the baseline's own default
    results = {}
    for name in ("baseline", "ours"):
        archive = InMemoryArchive(documents)
        if name == "ours":
            answerer = Answerer(settings)
            answerer.warm_up(archive, list(documents))
            convert = None
        else:
            answerer = old.Answerer(old_settings)
            answerer.warm_up(archive)

            def convert(c, _cls=old.Candidate):
                return _cls(span=c.span, vector=c.vector, chunk_rank=c.chunk_rank, chunk_score=c.chunk_score,
                            paragraph=c.paragraph, sentence_index=c.sentence_index, heading=c.heading,
                            section=c.section)
        first = _time(answerer, inputs, archive, convert)
        repeat = _time(answerer, inputs, archive, convert)
        results[name] = (first, repeat)
    print(f"answer stage over {len(inputs)} questions ({', '.join(Path(g).name for g in args.gold)}), "
          f"ms; baseline = rag/answerer.py at {args.rev}")
    print(f"{'':10}{'first p50':>10}{'first p95':>10}{'repeat p50':>11}{'repeat p95':>11}")
    for name, (first, repeat) in results.items():
        print(f"{name:10}{np.percentile(first, 50):10.2f}{np.percentile(first, 95):10.2f}"
              f"{np.percentile(repeat, 50):11.2f}{np.percentile(repeat, 95):11.2f}")
    (bf, br), (of, orr) = results["baseline"], results["ours"]
    print(f"{'ratio':10}{np.percentile(of, 50) / np.percentile(bf, 50):10.2f}"
          f"{np.percentile(of, 95) / np.percentile(bf, 95):10.2f}"
          f"{np.percentile(orr, 50) / np.percentile(br, 50):11.2f}"
          f"{np.percentile(orr, 95) / np.percentile(br, 95):11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
