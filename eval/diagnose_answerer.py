"""Where the answerer loses answerable questions: a loss table per split and question type.

Every answerable question's answer is put in one class:

* ``ok``: answered, and the answer holds every gold key;
* ``a10``: a key is in no candidate sentence and not in the top-10 hits either (retrieval);
* ``a``: a key is in no candidate sentence but in the top-10 hits (the answerer reads too few
  hits: ``answer_hits``, or a compound question's part was not retrieved for);
* ``b``: every key is in some candidate sentence, but the chosen sentences miss one (scoring);
* ``c``: the chosen sentences hold every key, the trimmed quotes do not (composition);
* ``d``: the composed answer holds every key, but the answerer abstained (answerability).

Unanswerable questions are counted as abstained or answered.

Two sources:

* **the training files (``fit_answerer.TRAIN_FILES``), cross-validated**: the cross-validation of ``eval/fit_answerer.py``
  (:func:`fit_answerer.cross_validate`) re-run with the hyper-parameters recorded in the model
  file (scorer, composition, ``answer_hits``, head regularisation); the threshold is re-derived
  per the fit's rule, so each question is answered by models that never saw it.
* **a gold file** (``--heldout FILE``, default ``eval/heldout.jsonl``): the bundled model through the
  pipeline, as ``rag eval``. Since round 5 held-out is training data of the shipped model; pass
  ``--heldout eval/test3.jsonl`` (validation) for questions it never saw.

Usage::

    .venv/bin/python eval/diagnose_answerer.py [--model rag/data/answer_model.json] [--list cv]
        [--out eval/reports/diagnosis.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fit_answerer as fa  # noqa: E402
from rag.answer.answerer import Answerer  # noqa: E402
from rag.answer.model import MODEL_PATH, AnswerModel  # noqa: E402
from rag.config import PROJECT_ROOT, Settings  # noqa: E402
from rag.gold import ANSWERABLE_TYPES, UNANSWERABLE_TYPES, load_gold, norm_ws  # noqa: E402

HELDOUT = PROJECT_ROOT / "eval" / "heldout.jsonl"
CLASSES = ("ok", "a10", "a", "b", "c", "d")


def classify(keys, top_texts, spans, choices, text: str, answered: bool) -> str:
    """The loss class of one answerable question (module docstring).

    Args:
        keys: Gold keys.
        top_texts: The top-10 hits' texts.
        spans: Every candidate sentence span the answerer read.
        choices: The composed choices (``index`` into ``spans``, trimmed ``span``).
        text: The composed answer's quoted text.
        answered: Whether the answer was given (not abstained).
    """
    keys = [norm_ws(k) for k in keys]
    if all(k in norm_ws(text) for k in keys):
        return "ok" if answered else "d"
    cands = [norm_ws(s.text) for s in spans]
    if not all(any(k in t for t in cands) for k in keys):
        top = "".join(norm_ws(t) for t in top_texts)
        return "a" if all(k in top for k in keys) else "a10"
    full = "".join(norm_ws(spans[c.index].text) for c in choices)
    return "c" if all(k in full for k in keys) else "b"


def table(rows: list[tuple[str, str, str, bool]], title: str) -> str:
    """Markdown loss table. ``rows``: ``(type, class or "", qid, unanswerable-abstained)``."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    una: dict[str, list[bool]] = defaultdict(list)
    for qtype, cls, _, abstained in rows:
        if qtype in UNANSWERABLE_TYPES:
            una[qtype].append(abstained)
        else:
            by_type[qtype][cls] += 1
            by_type["all answerable"][cls] += 1
    lines = [f"### {title}", "", "| type | n | " + " | ".join(CLASSES) + " | key recall |",
             "|---|---|" + "---|" * (len(CLASSES) + 1)]
    for qtype in list(ANSWERABLE_TYPES) + ["all answerable"]:
        c = by_type.get(qtype)
        if not c:
            continue
        n = sum(c.values())
        lines.append(f"| {qtype} | {n} | " + " | ".join(str(c[k]) for k in CLASSES) + f" | {c['ok'] / n:.3f} |")
    lines.append("")
    for qtype in UNANSWERABLE_TYPES:
        if una.get(qtype):
            lines.append(f"{qtype}: abstained {sum(una[qtype])}/{len(una[qtype])}  ")
    return "\n".join(lines) + "\n"


def model_hyper(path: Path) -> dict:
    """The hyper-parameters recorded in a model file."""
    d = json.loads(path.read_text(encoding="utf-8"))
    s = d["sentence"]
    kind = s["kind"]
    param = s["C"] if kind == "logistic" else tuple(s["grid"])
    if kind == "logistic" and s.get("weighting") == "per-question":
        param = (param, "per-question")
    compose = dict(d["compose"])
    answer_hits = int(compose.pop("answer_hits", 5))
    for k in ("factoid_full_chars", "factoid_window_chars", "list_window_chars", "list_by_source"):
        compose[k] = int(compose[k])
    def spec(c):
        return tuple(c) if isinstance(c, list) else c

    heads = {m: (spec(h["answerability"]["C"]), spec(h["correctness"]["C"])) for m, h in d["heads"].items()}
    return {"kind": kind, "param": param, "compose": compose, "answer_hits": answer_hits, "heads": heads,
            "max_false_abstention": d["training"].get("cv", {}).get("max_false_abstention", 0.05),
            "group_by": d["training"].get("cv", {}).get("group_by", "question")}


def cv_rows(settings: Settings, hyper: dict, verbose: bool = False):
    """Cross-validated loss class of every training question (``fit_answerer.TRAIN_FILES``) (dense mode)."""
    paths, _, _, by_k, archive, _ = fa.load_training(settings)
    examples = by_k[hyper["answer_hits"]]
    answerer = Answerer(settings.replace(abstain_threshold=0.0), model=fa._Bootstrap({}))
    fold = fa.folds_of(examples, fa.N_FOLDS, fa.answer_groups(paths) if hyper["group_by"] == "answer" else None)
    w = hyper["compose"]["part_other_weight"]
    cases_by_weight = fa.prepare_cases(answerer, examples, archive, [w])
    oof = {w: fa.oof_logits(hyper["kind"], hyper["param"], cases_by_weight[w], examples, fold, fa.N_FOLDS)}
    cv = fa.cross_validate(answerer, examples, cases_by_weight, fold, oof, hyper["compose"], heads_C=hyper["heads"],
                           max_false_abstention=hyper["max_false_abstention"], verbose=verbose)
    rows = []
    for i, e in enumerate(examples):
        if e.mode != "dense":
            continue
        cls = "" if e.unanswerable else classify(e.keys, e.top_texts, cv.cases[i].prep.spans, cv.choices[i],
                                                 cv.texts[i], cv.answered[i])
        rows.append((e.split, e.qtype, cls, e.qid, not cv.answered[i], e.question, e.keys, cv.texts[i]))
    return rows, cv


def heldout_rows(settings: Settings, model_path: Path, gold_path: Path = HELDOUT):
    """Loss class of every held-out question, answered by ``model_path`` through the pipeline."""
    from rag.pipeline import Pipeline

    pipeline = Pipeline(settings)
    pipeline._answerer = Answerer(settings, model=AnswerModel.load(model_path))
    pipeline.warm_up()
    answerer, store = pipeline._answerer, pipeline.store
    rows = []
    for q in load_gold(gold_path):
        text = q.question.strip()
        qv = pipeline.embed_question(text)
        hits = pipeline.retrieve(text, top_k=10, query_vector=qv)
        evidence, cands = pipeline.evidence(text, qv, hits)
        case = answerer.case(text, qv, evidence, cands, store)
        if len(case.prep):
            logits, part_logits = answerer.logits(case)
            choices = answerer.compose(case, logits, part_logits)
            answerable, confidence = answerer.scores(case, logits, choices)
            draft = answerer.draft(case, choices, answerable, confidence, store, logits)
        else:
            choices, draft = [], None
        answered = draft is not None and not draft.abstained
        quoted = fa.answer_text(choices)
        cls = "" if q.unanswerable else classify(q.keys, [h.text for h in hits], case.prep.spans, choices,
                                                 quoted, answered)
        rows.append(("heldout", q.type, cls, q.id, not answered, text, q.keys, quoted))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL_PATH)
    ap.add_argument("--heldout", type=Path, default=HELDOUT)
    ap.add_argument("--no-heldout", action="store_true")
    ap.add_argument("--list", choices=("cv", "heldout"), default=None,
                    help="also list each lost question of that source with its class")
    ap.add_argument("--out", type=Path, default=None, help="write the tables to this markdown file")
    args = ap.parse_args(argv)

    settings = Settings.from_env()
    hyper = model_hyper(args.model)
    print(f"model {args.model}: scorer {hyper['kind']} {hyper['param']}, answer_hits {hyper['answer_hits']}, "
          f"compose {hyper['compose']}", file=sys.stderr)
    cv, _ = cv_rows(settings, hyper)
    out = [f"Loss classes (see eval/diagnose_answerer.py): model `{args.model.name}`, answer_hits "
           f"{hyper['answer_hits']}.\n"]
    out.append(table([(r[1], r[2], r[3], r[4]) for r in cv], "all training files, 5-fold CV"))
    for split in sorted({r[0] for r in cv}):
        out.append(table([(r[1], r[2], r[3], r[4]) for r in cv if r[0] == split], f"{split}, CV part"))
    held = [] if args.no_heldout else heldout_rows(settings, args.model, args.heldout)
    if held:
        out.append(table([(r[1], r[2], r[3], r[4]) for r in held], "held-out (`rag eval` path)"))
    text = "\n".join(out)
    print(text)
    if args.list:
        for r in (cv if args.list == "cv" else held):
            if r[2] not in ("", "ok") or (r[1] in UNANSWERABLE_TYPES and not r[4]):
                print(f"{r[2] or 'ANSWERED'}\t{r[3]}\t{r[1]}\t{r[5]}\tkeys={list(r[6])}\t{r[7][:160]!r}")
    if args.out:
        args.out.write_text("# Answerer loss diagnosis\n\n" + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
