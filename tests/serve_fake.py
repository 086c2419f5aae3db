"""Multi-process serving with the FakeEmbedder: the per-worker app factory and the index
preparation that :func:`server.run.serve` runs, importable by spawned worker processes.

Used by the worker tests and by ``eval/load_test.py --fake``; settings come from ``RAG_*``.
"""

from __future__ import annotations

import sys

from rag.config import Settings
from rag.pipeline import Pipeline
from server.app import create_app
from tests.fakes import FakeEmbedder


def _notify(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_pipeline(settings: Settings, auto_index: bool = True) -> Pipeline:
    """A pipeline with the fake embedder; index notices go to stderr."""
    return Pipeline(settings, embedder=FakeEmbedder(), auto_index=auto_index, notify=_notify)


def worker_app():
    """One worker: load (never build) the index that ``serve`` prepared."""
    settings = Settings.from_env()
    return create_app(settings, pipeline=make_pipeline(settings, auto_index=False), warm=True)


def main(argv: list[str]) -> int:
    """``python -m tests.serve_fake PORT WORKERS``: serve with the fake embedder."""
    from server.run import serve

    port, workers = int(argv[0]), int(argv[1])
    return serve(Settings.from_env(), port=port, workers=workers, log_level="warning",
                 factory="tests.serve_fake:worker_app", make_pipeline=make_pipeline)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
