"""``python -m tests.fake_cli ARGS``: the real ``rag`` command line with the fake embedder, for
tests that run real processes (and kill them). Each embedding call appends the number of texts
and the first text to the file named by ``RAG_TEST_EMBED_LOG`` (when set)."""

from __future__ import annotations

import json
import os
import sys

import rag.embedding
from rag import cli

from .fakes import FakeEmbedder


class LoggingEmbedder(FakeEmbedder):
    def embed_passages(self, texts, *, show_progress=False, threads=None):
        log = os.environ.get("RAG_TEST_EMBED_LOG")
        if log and len(texts):
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"n": len(texts), "first": texts[0]}, ensure_ascii=False) + "\n")
        return super().embed_passages(texts)


rag.embedding.Embedder = lambda settings: LoggingEmbedder()

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
