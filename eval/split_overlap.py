"""Find the questions of one gold split that overlap other splits, and write the novel rest.

A question of the target split *overlaps* a reference split when, for some reference question,
either
  * both are answerable, come from the same document, and share the answer (a key in common, or
    one evidence string containing the other), or
  * their question texts share at least ``--jaccard`` of their character bigrams (Jaccard).

The novel subset (no overlap with any reference split) measures answers on facts and wordings
that nothing was fitted or tuned on.

Usage:
    python eval/split_overlap.py eval/test.jsonl --against eval/gold.jsonl eval/heldout.jsonl \
        eval/train.jsonl --out /tmp/test_novel.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(path: Path) -> list[dict]:
    """Read a gold JSONL file into a list of dicts (one per non-empty line)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def bigrams(text: str) -> set[str]:
    """Character bigrams of ``text`` without whitespace and common punctuation."""
    kept = "".join(ch for ch in text if ch.isalnum())
    return {kept[i:i + 2] for i in range(len(kept) - 1)}


def same_answer(a: dict, b: dict) -> bool:
    """True when two answerable questions of one document share a key or an evidence string."""
    if a.get("unanswerable") or b.get("unanswerable") or a.get("doc") != b.get("doc"):
        return False
    if set(a.get("keys", [])) & set(b.get("keys", [])):
        return True
    return any(x in y or y in x for x in a.get("evidence", []) for y in b.get("evidence", []))


def overlap_reason(question: dict, reference: list[dict], jaccard: float) -> str | None:
    """The first reason ``question`` overlaps ``reference`` ("answer:ID" / "wording:ID"), or None."""
    grams = bigrams(question["question"])
    for other in reference:
        if same_answer(question, other):
            return f"answer:{other['id']}"
        other_grams = bigrams(other["question"])
        union = grams | other_grams
        if union and len(grams & other_grams) / len(union) >= jaccard:
            return f"wording:{other['id']}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--against", type=Path, nargs="+", required=True)
    parser.add_argument("--jaccard", type=float, default=0.5)
    parser.add_argument("--out", type=Path, required=True, help="where to write the novel subset")
    args = parser.parse_args(argv)
    target = load(args.target)
    reference = [q for path in args.against for q in load(path)]
    novel, counts = [], {}
    for question in target:
        reason = overlap_reason(question, reference, args.jaccard)
        if reason is None:
            novel.append(question)
        else:
            counts[reason.split(":")[0]] = counts.get(reason.split(":")[0], 0) + 1
    args.out.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in novel), encoding="utf-8")
    per_type: dict[str, int] = {}
    for question in novel:
        per_type[question.get("type", "?")] = per_type.get(question.get("type", "?"), 0) + 1
    print(f"{len(novel)}/{len(target)} novel; overlaps by reason {counts}; novel per type {per_type}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
