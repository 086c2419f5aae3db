"""Adding one small document vs building the bundled archive's store from scratch, in the same
run with the real model (loaded once, before both timings, so model load is excluded from both).

Done-when of issue "An archive that grows": the add takes at most 0.3x the full build.

Usage: ``.venv/bin/python eval/bench_add.py [--repeat 3] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMALL = "补充通报\n\n2023年，辽源市新建社区养老服务站12处，覆盖城区所有街道。\n服务站提供助餐、助浴和日间照料服务。\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from rag.config import Settings
    from rag.pipeline import Pipeline

    rows = []
    embedder = None
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.from_env(index_dir=Path(tmp) / "store")
            pipeline = Pipeline(settings, embedder=embedder, notify=lambda m: None)
            t = time.perf_counter()
            pipeline.embedder.warm_up()
            load_s = time.perf_counter() - t
            embedder = pipeline.embedder
            t = time.perf_counter()
            built = pipeline.sync()
            full_s = time.perf_counter() - t
            doc = Path(tmp) / "notice.txt"
            doc.write_text(SMALL, encoding="utf-8")
            t = time.perf_counter()
            added = pipeline.add([doc])
            add_s = time.perf_counter() - t
            rows.append({"model_load_s": load_s, "full_build_s": full_s, "full_texts": built.embedded_texts,
                         "add_one_s": add_s, "add_texts": added.embedded_texts, "ratio": add_s / full_s})
    best = min(rows, key=lambda r: r["ratio"])
    worst = max(rows, key=lambda r: r["ratio"])
    if args.json:
        print(json.dumps({"runs": rows}, indent=1))
    else:
        for r in rows:
            print(f"full build {r['full_build_s']:.1f} s ({r['full_texts']} texts), add one document "
                  f"{r['add_one_s']:.2f} s ({r['add_texts']} texts): ratio {r['ratio']:.3f}")
        print(f"target ratio <= 0.3: {'met' if worst['ratio'] <= 0.3 else 'MISSED'} (worst {worst['ratio']:.3f}, best {best['ratio']:.3f})")


if __name__ == "__main__":
    main()
