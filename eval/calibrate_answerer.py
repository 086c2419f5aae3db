"""Calibrate the answerer's abstention threshold on the dev gold set.

Runs the real :class:`rag.pipeline.Pipeline` (model + index) once per gold question to get the
query vector, the hits and the candidate sentences, then re-runs only the
:class:`rag.answerer.Answerer` for every threshold of a sweep (the answer text of a question
that is answered does not depend on the threshold, only the abstention decision does) and
scores each run with :func:`rag.metrics.score_records`.

Usage::

    .venv/bin/python eval/calibrate_answerer.py                 # sweep, top_k 10 as in rag eval
    .venv/bin/python eval/calibrate_answerer.py --show 0.42     # per-question answers and failures

Printed per threshold: abstention precision / recall (unanswerable questions), false-abstention
rate (answerable questions that abstained), key recall (answerable questions answered with all
keys), median answer length in characters (answered questions, markers removed) and, for the
six out-of-domain questions (ids in ``OUT_OF_DOMAIN``), how many abstained.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.answerer import Answerer  # noqa: E402
from rag.archive import InMemoryArchive  # noqa: E402
from rag.config import PROJECT_ROOT, Settings  # noqa: E402
from rag.gold import load_gold  # noqa: E402
from rag.metrics import score_records  # noqa: E402

#: Gold ids of questions outside the archive's domain (weather, recipe, another city, travel
#: fares, sport, programming); the other unanswerable ones are near-domain.
OUT_OF_DOMAIN = ("q095", "q096", "q097", "q098", "q099", "q100")


def collect(gold, top_k: int, cache: Path | None):
    """Per question: (query_vector, hits, evidence candidates); documents. Cached in ``cache``.

    As in :meth:`Pipeline.ask`, ``top_k`` hits are retrieved (they are scored for retrieval) and
    the answer is composed from the first ``settings.answer_hits`` of them only.
    """
    if cache is not None and cache.exists():
        with open(cache, "rb") as fh:
            data = pickle.load(fh)
        if data.get("questions") == [q.question for q in gold] and data.get("top_k") == top_k \
                and data.get("format") == 3:
            return data["inputs"], data["documents"]
    from rag.pipeline import Pipeline

    pipeline = Pipeline()
    pipeline.warm_up()
    answer_hits = getattr(pipeline.settings, "answer_hits", top_k)
    inputs = []
    for q in gold:
        qv = pipeline.embed_question(q.question.strip())
        hits = pipeline.retrieve(q.question, top_k=top_k, query_vector=qv)
        evidence = hits[:answer_hits]
        inputs.append((qv, hits, evidence, pipeline.candidates(evidence)))
    documents = {info.doc_id: pipeline.document(info.doc_id) for info in pipeline.documents()}
    if cache is not None:
        with open(cache, "wb") as fh:
            pickle.dump({"format": 3, "questions": [q.question for q in gold], "top_k": top_k,
                         "inputs": inputs, "documents": documents}, fh)
    return inputs, documents


def run(gold, inputs, documents, settings: Settings) -> list[dict]:
    answerer = Answerer(settings)
    archive = InMemoryArchive(documents)
    records = []
    for q, (qv, hits, evidence, cands) in zip(gold, inputs):
        d = answerer.answer(q.question.strip(), qv, evidence, cands, archive)
        records.append({"question": q.question, "answer": d.text, "abstained": d.abstained,
                        "confidence": d.confidence, "question_type": d.question_type,
                        "citations": [c.to_dict() for c in d.citations],
                        "hits": [h.to_dict() for h in hits]})
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gold", default=str(PROJECT_ROOT / "eval" / "gold.jsonl"))
    ap.add_argument("--top-k", type=int, default=10,
                    help="hits retrieved per question (rag eval default: 10); the answer uses the "
                         "first settings.answer_hits of them, as Pipeline.ask does")
    ap.add_argument("--cache", default="/tmp/calibrate_answerer.pkl",
                    help="pickle of pipeline outputs ('' disables)")
    ap.add_argument("--thresholds", default="0,0.1,0.15,0.2,0.25,0.3,0.33,0.36,0.4,0.45,0.5,0.6")
    ap.add_argument("--show", type=float, default=None,
                    help="print per-question answers and failures at this threshold")
    args = ap.parse_args(argv)

    gold = load_gold(args.gold)
    inputs, documents = collect(gold, args.top_k, Path(args.cache) if args.cache else None)
    raw = {doc_id: doc.text for doc_id, doc in documents.items()}
    base = Settings.from_env()
    ood = [i for i, q in enumerate(gold) if q.id in OUT_OF_DOMAIN]

    print(f"top_k={args.top_k}  n={len(gold)}  answerable={sum(not q.unanswerable for q in gold)}")
    print("thresh  abst_P  abst_R  false_abst  key_recall  median_chars  OOD_abstained  cit_valid")
    for t in [float(x) for x in args.thresholds.split(",")]:
        recs = run(gold, inputs, documents, base.replace(abstain_threshold=t))
        s = score_records(gold, recs, raw_texts=raw)
        ood_n = sum(recs[i]["abstained"] for i in ood)

        def f(v):
            return "  n/a " if v is None else f"{v:6.3f}"
        print(f"{t:5.2f}  {f(s['abstention_precision'])}  {f(s['abstention_recall'])}  "
              f"{f(s['false_abstention_rate'])}      {f(s['key_recall'])}      "
              f"{f(s['answer_chars_median'])}        {ood_n}/{len(ood)}       "
              f"{f(s['citation_validity'])}")
    if args.show is not None:
        recs = run(gold, inputs, documents, base.replace(abstain_threshold=args.show))
        s = score_records(gold, recs, raw_texts=raw)
        for q, r, pq in zip(gold, recs, s["per_question"]):
            mark = "FAIL" if pq["failure"] else "ok  "
            print(f"\n{mark} {q.id} [{r['question_type']}/{q.type}] conf={r['confidence']:.3f} "
                  f"rank={pq['first_relevant_rank']} {q.question}  keys={list(q.keys)}")
            if pq["failure"]:
                print("     failure:", pq["failure"])
            print("    ", r["answer"].replace("\n", "\n     "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
