"""The Milvus store: the same :class:`~rag.store.base.Store` on a Milvus server (standalone or
cluster) or on Milvus Lite (a local ``.db`` folder; the test double, never a speed reference).

Written to the server's semantics; Milvus Lite only runs the same client calls.

**Collections** (``P`` = the collection-name prefix, ``S`` = the active *set*, e.g. ``s1``):

* ``P_root``: the pointer to the active set and the writer lease (rows of the key/value schema).
* ``P_S_kv``: key/value rows: store metadata (``m:<key>``), the statistics row (``stats``: counts,
  the generation), one row per document (``d:<doc_id>``: its facts and committed *version*),
  pieces of each document version's payload (``p:<version>:<kind>:<n>``: stored text, PDF page
  starts, unit and chunk term counts; a VARCHAR holds at most 65,535 bytes), term statistics
  (``t:<hash>``: units and chunks containing the term) and write intents (``i:<generation>``).
* ``P_S_chunks``: one row per chunk: doc_id, version, ordinal, start, end, page, title, date,
  format, clean text, section context, its sentences' ordinal range, the dense vector
  (FLOAT_VECTOR, inner product) and a BM25 sparse vector (SPARSE_FLOAT_VECTOR, inner product).
* ``P_S_sentences``: one row per sentence: offsets, clean text, paragraph, heading flag, section
  and its vector, fetched by primary key for the chunks a question reaches.

Primary keys of chunk, sentence and payload rows carry the document *version* (a random id per
upsert), so a new version never overwrites the rows of the old one.

**Crash safety without transactions.** Milvus has no transaction across rows or collections, so
one upsert is: (1) an intent row naming the new version, (2) the new version's rows, (3) the
document row pointing at the new version -- the commit marker --, then, for a batch of
committed changes (:data:`STATS_BATCH` of them, :data:`STATS_BATCH_S` seconds, or the end of the
writer's session), (4) term statistics and the statistics row (the generation), each row tagged
with the generation that last changed it so a replay never applies a change twice, (5) deletion
of the replaced versions' rows, (6) deletion of the intents. Until its batch is applied, a
committed document is listed and readable but its terms are not yet in BM25's statistics. Readers only use rows whose version is the one their document row names, so rows of an
unfinished write are invisible. The next writer replays or rolls back a leftover intent before
anything else (:meth:`MilvusStore.writer`). A removal is the same with the document row deleted
as its commit.

**Lexical search** is our BM25 (:mod:`rag.store.lexical`: bm25s's scoring, ``k1=1.5, b=0.75``,
tokens of :func:`rag.tokenize.tokenize`), not the engine's analyzer: each chunk row carries a
sparse vector of saturated term frequencies ``tf / (tf + k1 (1 - b + b dl / avgdl0))`` (``avgdl0``
the archive's mean when the chunk was written) keyed by a 32-bit hash of the token; a question
searches it with ``idf``-weighted query terms (inner product), and the best
:data:`LEXICAL_POOL` are re-scored exactly with the current ``N``, ``df`` and ``avgdl`` kept in the
term statistics. Measured on the bundled archive (``eval/bench_milvus.py quality``): top-10
overlap with the embedded store's BM25 1.000 after re-scoring, 0.973 without; the engine's jieba
analyzer (jieba's default dictionary) 0.852, with our user dictionary's words 0.861.

**Consistency.** Writes, the writer's reads and the lease use ``Strong``; a reader's change probe
(:meth:`MilvusStore.refresh`) and its searches use ``Bounded`` (the server's default staleness),
so a running server sees another process's changes within that window. Rows are immutable per
version, so a stale read can miss a fresh row but never pair a chunk with another version's text.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections import Counter, OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from rag.archive import idf_from_counts
from rag.errors import (ConfigError, CorruptIndexError, IndexMismatchError, IngestError, StoreBusyError,
                        StoreUnavailableError)
from rag.types import Chunk, Document, Span

from .base import DocumentInfo, PreparedDocument, StoredChunk, StoredSentence
from .embedded import crash_test_hook
from .files import pid_alive
from .lexical import B, K1
from .meta import check_meta

#: Bump when collections or their meaning change; an older set is then refused with a hint.
STORE_FORMAT = 1
#: Milvus's VARCHAR limit, in bytes (UTF-8).
VARCHAR_MAX_BYTES = 65_535
#: Payload piece length in code points: at most 4 bytes each, so a piece always fits a VARCHAR.
PIECE_CHARS = 16_000
#: Milvus's ceiling on ``offset + limit`` of one query or search.
QUERY_LIMIT = 16_384
#: Keys per ``pk in [...]`` expression (keeps expressions small; several queries beyond).
IN_BATCH = 1_000
#: Rows per page of a query iterator.
ITERATOR_BATCH = 1_000
#: Rows per insert request (keeps gRPC messages far below the 256 MB default limit).
INSERT_BATCH = 500
#: BM25 candidates re-scored exactly: the same pool as the dense re-scoring
#: (:data:`rag.retriever.DENSE_POOL`); a pool of 30 already gave top-10 overlap 1.000 with the
#: embedded store on the bundled archive's gold questions.
LEXICAL_POOL = 100
#: Committed changes whose term statistics are written together (and at the latest after
#: STATS_BATCH_S seconds, and when the writer releases its lease): a batch writes each term row
#: once instead of once per document; readers see a batch's documents in BM25 when it is applied.
STATS_BATCH = 64
STATS_BATCH_S = 5.0
#: Writer lease: a writer renews it every LEASE_RENEW_S while held; another writer may take it
#: when it is older than LEASE_TTL_S (the holder died) -- 3 missed renewals.
LEASE_TTL_S = 60.0
LEASE_RENEW_S = 20.0
#: Documents (facts and stored text) kept in memory per process (the answerer reads a few per
#: question; the same bound as the embedded store's cache).
DOCUMENT_CACHE = 256
#: Term statistics rows kept in memory between changes.
TERM_CACHE = 200_000
#: Dense index parameters. HNSW M=16, efConstruction=200: the values of Milvus's HNSW guide
#: (https://milvus.io/docs/hnsw.md) for recall > 0.95 at 384 dimensions; IVF nlist 1024 and
#: nprobe 64 likewise (https://milvus.io/docs/ivf-sq8.md).
DENSE_INDEXES = {
    "HNSW": ({"M": 16, "efConstruction": 200}, lambda limit: {"ef": max(limit, 128)}),
    "IVF_SQ8": ({"nlist": 1024}, lambda limit: {"nprobe": 64}),
    "IVF_FLAT": ({"nlist": 1024}, lambda limit: {"nprobe": 64}),
    "FLAT": ({}, lambda limit: {}),
    "AUTOINDEX": ({}, lambda limit: {}),
}
#: Bits of a term's hash used as its sparse-vector dimension (Milvus: indices in [0, 2^32 - 1)).
_SPARSE_MOD = 2 ** 32 - 1

_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,150}")
_log = logging.getLogger(__name__)


def _quiet_client_logs() -> None:
    """pymilvus logs every failed call with its traceback and milvus_lite logs a failed start
    with one; our errors carry the message instead, so only their critical records remain.
    (pymilvus sets its loggers' levels when imported, hence the import first.)"""
    import pymilvus  # noqa: F401

    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer", "milvus_lite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def is_lite_uri(uri: str) -> bool:
    """True for a Milvus Lite path (ends with ``.db``), False for ``http(s)://host:port``."""
    return not uri.startswith(("http://", "https://")) and uri.endswith(".db")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _lit(value: str) -> str:
    """A string literal of Milvus's expression language (double quotes, backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") \
        .replace("\t", "\\t") + '"'


def _in(field: str, values: Sequence[str]) -> str:
    return f"{field} in [{', '.join(_lit(v) for v in values)}]"


def _term_hash(term: str) -> bytes:
    return hashlib.blake2b(term.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def term_key(term: str) -> str:
    """Key of a term's statistics row: a 64-bit hash, so keys need no escaping and stay short."""
    return "t:" + _term_hash(term).hex()


def term_dim(term: str) -> int:
    """The sparse-vector dimension of a term (32 bits of its hash; a collision between two terms
    of one chunk has probability ~ terms^2 / 2^33, about 10^-5 for 400-character chunks)."""
    return int.from_bytes(_term_hash(term)[:4], "little") % _SPARSE_MOD


def _pieces(text: str) -> list[str]:
    return [text[i:i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


# --- connecting ------------------------------------------------------------------------------

_LITE_LOCK = threading.Lock()
_LITE_USERS: dict[str, int] = {}


def _lite_endpoint(path: Path) -> str:
    """Start (or reuse) this process's Milvus Lite server for ``path``; its local gRPC URI.

    Raises:
        StoreBusyError: another process has the file open (Milvus Lite serves one process).
        StoreUnavailableError: the file cannot be opened.
    """
    from milvus_lite.server_manager import server_manager_instance

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreUnavailableError(f"cannot create the folder of the Milvus Lite file {path}: {err.strerror or err}",
                                    hint="set RAG_MILVUS_URI to a writable path ending in .db") from err
    uri = server_manager_instance.start_and_get_uri(str(path))
    if uri is None:
        if _lite_locked_elsewhere(path):
            raise StoreBusyError(
                f"the Milvus Lite file {path} is open in another process (Milvus Lite serves one process)",
                hint="stop the other rag process, run `rag serve` with --workers 1, or point RAG_MILVUS_URI "
                     "at a Milvus server (http://host:19530)")
        raise StoreUnavailableError(f"Milvus Lite could not open {path}",
                                    hint="check that RAG_MILVUS_URI names a Milvus Lite .db folder (or a new path)")
    with _LITE_LOCK:
        _LITE_USERS[str(path)] = _LITE_USERS.get(str(path), 0) + 1
    return uri


def _lite_locked_elsewhere(path: Path) -> bool:
    import fcntl

    lock = path / "LOCK"
    if not lock.exists():
        return False
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _release_lite(path: Path) -> None:
    with _LITE_LOCK:
        left = _LITE_USERS.get(str(path), 0) - 1
        if left > 0:
            _LITE_USERS[str(path)] = left
            return
        _LITE_USERS.pop(str(path), None)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(path))


def _unreachable(uri: str, err: BaseException) -> StoreUnavailableError:
    detail = getattr(err, "message", None) or str(err)
    return StoreUnavailableError(f"cannot reach Milvus at {uri}: {detail}",
                                 hint="check RAG_MILVUS_URI (--milvus-uri) and RAG_MILVUS_TOKEN, and that the "
                                      "server is running; or set RAG_BACKEND=embedded")


# --- schemas ---------------------------------------------------------------------------------

def _schema(kind: str, dim: int):
    """The pymilvus schema of a collection kind (``kv``, ``chunks``, ``sentences``)."""
    from pymilvus import DataType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    if kind == "kv":
        s.add_field("key", DataType.VARCHAR, is_primary=True, max_length=2048)
        s.add_field("kind", DataType.VARCHAR, max_length=16)
        s.add_field("doc_id", DataType.VARCHAR, max_length=1024)
        s.add_field("version", DataType.VARCHAR, max_length=40)
        s.add_field("body", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES)
        # Milvus requires a vector field in every collection; this one is constant.
        s.add_field("pad", DataType.FLOAT_VECTOR, dim=2)
        return s
    s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field("doc_id", DataType.VARCHAR, max_length=1024)
    s.add_field("version", DataType.VARCHAR, max_length=40)
    s.add_field("ordinal", DataType.INT64)
    s.add_field("start", DataType.INT64)
    s.add_field("end", DataType.INT64)
    s.add_field("clean", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES)
    if kind == "chunks":
        s.add_field("page", DataType.INT64)  # 1-based PDF page of the start, 0 without pages
        s.add_field("title", DataType.VARCHAR, max_length=1024)
        s.add_field("date", DataType.VARCHAR, max_length=32)
        s.add_field("format", DataType.VARCHAR, max_length=16)
        s.add_field("context", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES)
        s.add_field("sentence_lo", DataType.INT64)
        s.add_field("sentence_hi", DataType.INT64)
        s.add_field("dl", DataType.INT64)  # BM25 document length (tokens)
        s.add_field("k0", DataType.FLOAT)  # k1 (1 - b + b dl / avgdl0) the sparse weights were made with
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    else:
        s.add_field("paragraph", DataType.INT64)
        s.add_field("heading", DataType.BOOL)
        s.add_field("section", DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return s


def _field_signature(fields: Iterable[dict]) -> dict[str, tuple]:
    out = {}
    for f in fields:
        params = f.get("params") or {}
        out[f["name"]] = (int(f["type"]), int(params.get("dim", 0) or 0))
    return out


def _expected_signature(kind: str, dim: int) -> dict[str, tuple]:
    return _field_signature(f.to_dict() if hasattr(f, "to_dict") else f
                            for f in (_schema(kind, dim).to_dict()["fields"]))


class MilvusStore:
    """A :class:`rag.store.base.Store` on Milvus (see the module docstring).

    Args:
        uri: ``http(s)://host:port`` of a Milvus server, or a path ending in ``.db`` (Milvus Lite).
        token: ``user:password`` or an API key (empty: no authentication).
        prefix: Collection-name prefix (letters, digits, ``_``; not starting with a digit).
        expect: Metadata the store must match (:func:`rag.store.meta.expected_meta`); an empty
            store adopts it. None skips the check (listing, removing).
        create: Create the root collection when missing (else :class:`CorruptIndexError`).
        timeout: Seconds to wait for the engine when connecting and per request.
        index: Dense index type (a key of :data:`DENSE_INDEXES`).
        notify: One-line progress messages.
        write_wait_s: How long a second writer waits for the lease before ``StoreBusyError``.

    Raises:
        StoreUnavailableError: the engine cannot be reached or the Lite file opened.
        StoreBusyError: the Milvus Lite file is open in another process.
        IndexMismatchError: a collection of this prefix has another schema, format or dimension,
            or the store was built with other settings or another model.
        CorruptIndexError: no store under this prefix and ``create`` is off.
    """

    def __init__(self, uri: str, *, token: str = "", prefix: str = "rag", expect: dict[str, Any] | None = None,
                 create: bool = True, timeout: float = 30.0, index: str = "HNSW",
                 notify: Callable[[str], None] | None = None, write_wait_s: float = 10.0):
        if not _PREFIX_RE.fullmatch(prefix or ""):
            raise IndexMismatchError(f"{prefix!r} is not a usable Milvus collection prefix",
                                     hint="set RAG_MILVUS_PREFIX to letters, digits and _ (not starting with a digit)")
        if index not in DENSE_INDEXES:
            raise IndexMismatchError(f"unknown Milvus dense index {index!r}",
                                     hint=f"set RAG_MILVUS_INDEX to one of {', '.join(DENSE_INDEXES)}")
        try:
            _quiet_client_logs()
        except ImportError as err:
            raise ConfigError(f"RAG_BACKEND=milvus needs the Milvus client ({err.name} is not installed)",
                              hint="pip install 'liaoyuan-rag[milvus]' (or set RAG_BACKEND=embedded)") from None
        if is_lite_uri(uri):
            try:
                import milvus_lite  # noqa: F401
            except ImportError:
                raise ConfigError("a Milvus Lite file needs the milvus-lite package",
                                  hint="pip install 'liaoyuan-rag[milvus]', or point RAG_MILVUS_URI at a server") \
                    from None
        self.uri = uri
        self.prefix = prefix
        self.timeout = float(timeout)
        self.index_type = index
        self.notify = notify or (lambda message: None)
        self.write_wait_s = float(write_wait_s)
        self._lite_path = Path(uri).expanduser().absolute() if is_lite_uri(uri) else None
        self._client = self._connect(token)
        self._lock = threading.RLock()
        self._write_lock = threading.RLock()
        self._depth = 0
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._heartbeat: tuple[threading.Thread, threading.Event] | None = None
        self._closed = False
        self._shared = False
        self._ready = False
        self._pending: list[dict] = []
        self._pending_since = 0.0
        self._dirty = False
        self._next_gen = 0
        self._totals: dict[str, int] = {}
        self._reset_caches()
        self.meta: dict[str, Any] = {}
        self._open(create)
        if expect is not None:
            self.adopt_or_check(expect)

    # --- engine calls ---------------------------------------------------------------------------

    def _connect(self, token: str):
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        target = self.uri
        if self._lite_path is not None:
            target = _lite_endpoint(self._lite_path)
        try:
            return MilvusClient(uri=target, token=token or "", timeout=self.timeout)
        except MilvusException as err:
            if self._lite_path is not None:
                _release_lite(self._lite_path)
            raise _unreachable(self.uri, err) from None

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        """Run one client call; engine errors become :class:`StoreUnavailableError` naming the
        operation, a missing collection :class:`_Gone`. A collection the engine released (a
        restart) is loaded and the call retried once."""
        from pymilvus.exceptions import MilvusException

        kwargs.setdefault("timeout", self.timeout)
        for attempt in (0, 1):
            try:
                return fn(*args, **kwargs)
            except MilvusException as err:
                message = getattr(err, "message", "") or str(err)
                lower = message.lower()
                if attempt == 0 and ("not loaded" in lower or "released" in lower or "load()" in lower):
                    self._load_all()
                    continue
                if "not found" in lower or "not exist" in lower or "can't find" in lower:
                    raise _Gone(f"{what}: {message}") from None
                if getattr(err, "code", None) == 2 or "unavailable" in lower or "fail connecting" in lower:
                    raise _unreachable(self.uri, err) from None
                raise StoreUnavailableError(f"Milvus at {self.uri} refused to {what}: {message}",
                                            hint="check the server's log; RAG_MILVUS_URI and RAG_MILVUS_TOKEN name "
                                                 "the server and its credentials") from None
            except Exception as err:  # grpc errors pymilvus did not wrap (e.g. deadline exceeded)
                if type(err).__module__.startswith(("grpc", "pymilvus")):
                    raise _unreachable(self.uri, err) from None
                raise

    def _load_all(self) -> None:
        for name in self._call("list collections", self._client.list_collections):
            if name.startswith(f"{self.prefix}_"):
                self._call(f"load {name}", self._client.load_collection, name)

    def _name(self, kind: str) -> str:
        return f"{self.prefix}_root" if kind == "root" else f"{self.prefix}_{self._set}_{kind}"

    def _query(self, kind: str, filter: str, fields: Sequence[str], *, limit: int | None = None,
               strong: bool = False) -> list[dict]:
        kwargs = {"consistency_level": "Strong" if strong else "Bounded"}
        if limit is not None:
            kwargs["limit"] = limit
        return list(self._call(f"query {self._name(kind)}", self._client.query, self._name(kind), filter=filter,
                               output_fields=list(fields), **kwargs))

    def _by_keys(self, kind: str, keys: Sequence[str], fields: Sequence[str], *, strong: bool | None = None
                 ) -> dict[str, dict]:
        """Rows by primary key (``key`` for kv and root, ``pk`` otherwise), in batches. Key/value
        rows are read ``Strong`` unless told otherwise (they fill caches that live until the next
        change), chunk and sentence rows ``Bounded`` (immutable per version)."""
        if strong is None:
            strong = kind in ("kv", "root")
        pk = "key" if kind in ("kv", "root") else "pk"
        out: dict[str, dict] = {}
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), IN_BATCH):
            part = keys[i:i + IN_BATCH]
            for row in self._query(kind, _in(pk, part), fields, limit=len(part), strong=strong):
                out[row[pk]] = row
        return out

    def _iterate(self, kind: str, filter: str, fields: Sequence[str], *, strong: bool = False) -> Iterator[dict]:
        """Every matching row, through a query iterator (a query returns at most 16,384 rows)."""
        iterator = self._call(f"iterate {self._name(kind)}", self._client.query_iterator, self._name(kind),
                              batch_size=ITERATOR_BATCH, filter=filter, output_fields=list(fields),
                              consistency_level="Strong" if strong else "Bounded")
        try:
            while True:
                batch = self._next(iterator)
                if not batch:
                    return
                yield from batch
        finally:
            iterator.close()

    def _next(self, iterator):
        from pymilvus.exceptions import MilvusException

        try:
            return iterator.next()
        except MilvusException as err:
            raise _unreachable(self.uri, err) from None

    def _upsert(self, kind: str, rows: list[dict]) -> None:
        for i in range(0, len(rows), INSERT_BATCH):
            self._call(f"write to {self._name(kind)}", self._client.upsert, self._name(kind), rows[i:i + INSERT_BATCH])

    def _insert(self, kind: str, rows: list[dict]) -> None:
        for i in range(0, len(rows), INSERT_BATCH):
            self._call(f"write to {self._name(kind)}", self._client.insert, self._name(kind), rows[i:i + INSERT_BATCH])

    def _delete(self, kind: str, filter: str) -> None:
        self._call(f"delete from {self._name(kind)}", self._client.delete, self._name(kind), filter=filter)

    @staticmethod
    def _kv(key: str, kind: str, body: Any, doc_id: str = "", version: str = "", raw: bool = False) -> dict:
        """A key/value row; ``body`` is JSON-encoded unless ``raw`` (payload pieces)."""
        text = body if raw else json.dumps(body, ensure_ascii=False)
        return {"key": key, "kind": kind, "doc_id": doc_id, "version": version, "body": text, "pad": [1.0, 0.0]}

    # --- collections ----------------------------------------------------------------------------

    def _collections(self) -> set[str]:
        return set(self._call("list collections", self._client.list_collections))

    def _create(self, kind: str, dim: int = 2) -> None:
        name = self._name(kind)
        params = self._client.prepare_index_params()
        if kind in ("kv", "root"):
            params.add_index("pad", index_type="FLAT", metric_type="IP")
            params.add_index("kind", index_type="INVERTED")
            params.add_index("version", index_type="INVERTED")
        else:
            build, _ = DENSE_INDEXES[self.index_type]
            if kind == "chunks":
                params.add_index("vector", index_type=self.index_type, metric_type="IP", params=build)
                params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
            else:  # sentence vectors are fetched by key, never searched: no graph
                params.add_index("vector", index_type="FLAT", metric_type="IP")
            params.add_index("doc_id", index_type="INVERTED")
            params.add_index("version", index_type="INVERTED")
        if is_lite_uri(self.uri):
            self._drop_lite_leftover(name)
        try:
            self._call(f"create {name}", self._client.create_collection, name,
                       schema=_schema("kv" if kind == "root" else kind, dim), consistency_level="Bounded")
        except StoreUnavailableError:
            if name not in self._collections():  # not a race with another creator
                raise
        # sync=False: pymilvus otherwise polls the (empty) index's state every 0.5 s.
        self._call(f"index {name}", self._client.create_index, name, params, sync=False)
        self._load(kind)

    def _drop_lite_leftover(self, name: str) -> None:
        """Milvus Lite only: a process killed inside ``create_collection`` leaves the collection's
        folder without its schema file (unlisted), and every later create of that name then fails
        with "File exists" (milvus_lite/db.py: ``makedirs`` before ``save_schema``). One process
        opens a Lite file, so an unlisted folder is such a leftover, never another's collection."""
        folder = Path(self.uri) / "collections" / name
        if folder.is_dir() and name not in self._collections():
            self.notify(f"removing {folder}, left by a process killed while creating it")
            shutil.rmtree(folder)

    def _load(self, kind: str) -> None:
        """Load a collection into memory (needed before searches and queries, also after a
        restart of the engine or of a Milvus Lite process)."""
        name = self._name(kind)
        state = self._call(f"check {name}", self._client.get_load_state, name)
        if "Loaded" not in str(state.get("state")):
            self._call(f"load {name}", self._client.load_collection, name)

    def _check_schema(self, kind: str, dim: int) -> None:
        name = self._name(kind)
        found = _field_signature(self._call(f"describe {name}", self._client.describe_collection, name)["fields"])
        want = _expected_signature("kv" if kind == "root" else kind, dim)
        if kind in ("chunks", "sentences"):  # the dimension is checked against the metadata
            found.pop("vector", None)
            want.pop("vector", None)
        if found != want:
            missing = sorted(set(want) - set(found))
            other = sorted(k for k in set(want) & set(found) if want[k] != found[k])
            extra = sorted(set(found) - set(want))
            raise IndexMismatchError(
                f"the Milvus collection {name} at {self.uri} has another schema than this version writes "
                f"(missing {missing}, different {other}, unknown {extra})",
                hint="set RAG_MILVUS_PREFIX (--milvus-prefix) to a prefix of your own, or drop the collections "
                     f"{self.prefix}_* it belongs to")

    def _vector_dim(self, kind: str) -> int:
        name = self._name(kind)
        for f in self._call(f"describe {name}", self._client.describe_collection, name)["fields"]:
            if f["name"] == "vector":
                return int((f.get("params") or {}).get("dim", 0))
        return 0

    def _open(self, create: bool) -> None:
        """Find (or create) the root and the active set; load and check its collections."""
        self._set = ""
        existing = self._collections()
        root = f"{self.prefix}_root"
        if root not in existing:
            if not create:
                raise CorruptIndexError(f"no store under the prefix {self.prefix} at {self.uri}",
                                        hint="run `rag sync` or `rag add PATH`")
            self._create("root")
            self._upsert("root", [self._kv("active", "meta", {"set": "s1", "format": STORE_FORMAT})])
        self._check_schema("root", 2)
        self._load("root")
        active = self._by_keys("root", ["active"], ["body"], strong=True).get("active")
        if active is None:
            self._upsert("root", [self._kv("active", "meta", {"set": "s1", "format": STORE_FORMAT})])
            active = {"body": json.dumps({"set": "s1", "format": STORE_FORMAT})}
        pointer = json.loads(active["body"])
        if int(pointer.get("format", 0)) != STORE_FORMAT:
            raise IndexMismatchError(f"the Milvus store {self.prefix} at {self.uri} has format "
                                     f"{pointer.get('format')}, this version reads {STORE_FORMAT}",
                                     hint="run `rag index --rebuild`, or set RAG_MILVUS_PREFIX to a new prefix")
        self._set = str(pointer["set"])
        if self._name("kv") not in existing:
            self._create("kv")
            self._upsert("kv", [self._kv(f"m:{k}", "meta", v) for k, v in
                                {"format": STORE_FORMAT, "store_uuid": uuid.uuid4().hex, "created": _now()}.items()])
        self._check_schema("kv", 2)
        self._load("kv")
        self.meta = self._read_meta()
        self._stats = self._read_stats(strong=True)
        dim = int(self.meta.get("dim", 0) or 0)
        for kind in ("chunks", "sentences"):
            if self._name(kind) in existing:
                self._check_schema(kind, dim)
                found = self._vector_dim(kind)
                if dim and found != dim:
                    raise IndexMismatchError(f"the Milvus collection {self._name(kind)} holds {found}-dimensional "
                                             f"vectors, the store's metadata says {dim}",
                                             hint="run `rag index --rebuild`, or set RAG_MILVUS_PREFIX to a new prefix")
                self._load(kind)
        self._generation = int(self._stats.get("gen", 0))
        self._ready = all(self._name(kind) in existing for kind in ("chunks", "sentences"))

    def _ensure_vector_collections(self, dim: int) -> None:
        existing = self._collections()
        for kind in ("chunks", "sentences"):
            name = self._name(kind)
            if name in existing and self._vector_dim(kind) != dim:
                self._call(f"drop {name}", self._client.drop_collection, name)
                existing.discard(name)
            if name not in existing:
                self._create(kind, dim)
        self._ready = True

    # --- metadata, statistics, generation -------------------------------------------------------

    def _reset_caches(self) -> None:
        self._docs: OrderedDict[str, dict | None] = OrderedDict()
        self._texts: OrderedDict[str, tuple[str, tuple[int, ...]]] = OrderedDict()
        self._terms: dict[str, tuple[int, int]] = {}

    def _read_meta(self) -> dict[str, Any]:
        return {row["key"][2:]: json.loads(row["body"])
                for row in self._query("kv", 'kind == "meta"', ["key", "body"], limit=QUERY_LIMIT, strong=True)}

    def _read_stats(self, strong: bool = False) -> dict[str, int]:
        """The statistics row (counts and generation); ``Bounded`` for a reader's probe."""
        row = self._by_keys("kv", ["stats"], ["body"], strong=strong).get("stats")
        stats = {"gen": 0, "documents": 0, "chunks": 0, "sentences": 0, "units": 0, "tokens": 0}
        if row is not None:
            stats.update(json.loads(row["body"]))
        return stats

    @property
    def location(self) -> str:
        """The engine and the collection prefix (for messages)."""
        return f"{self.uri} (collections {self.prefix}_*)"

    def adopt_or_check(self, expect: dict[str, Any]) -> None:
        """Record ``expect`` in an empty store (creating the vector collections for its
        dimension), or check a filled one against it.

        Raises:
            IndexMismatchError: the store holds documents built differently.
        """
        if all(str(self.meta.get(k)) == str(v) for k, v in expect.items()) and self._has_vector_collections():
            return
        if self._read_stats(strong=True)["documents"] == 0:
            with self.writer():
                self._ensure_vector_collections(int(expect["dim"]))
                self._upsert("kv", [self._kv(f"m:{k}", "meta", v) for k, v in expect.items()])
            self.meta = self._read_meta()
            return
        check_meta(self.meta, expect, self.location)

    def _has_vector_collections(self) -> bool:
        return self._ready

    def set_meta(self, key: str, value: Any) -> None:
        """Record one metadata value (JSON-serialisable)."""
        self._upsert("kv", [self._kv(f"m:{key}", "meta", value)])
        self.meta[key] = value

    def count_documents(self) -> int:
        return int(self._read_stats(strong=True)["documents"])

    def count_chunks(self) -> int:
        return int(self._read_stats(strong=True)["chunks"])

    def count_sentences(self) -> int:
        return int(self._read_stats(strong=True)["sentences"])

    def generation(self) -> int:
        """The generation of the last committed change (the statistics row)."""
        return int(self._read_stats()["gen"])

    def refresh(self) -> bool:
        """Catch up with changes committed elsewhere (one read of the statistics row); follows a
        rebuild's switch to a new set of collections."""
        try:
            stats = self._read_stats()
        except _Gone:
            stats = {"moved": True}
        if stats.get("moved"):
            with self._lock:
                self._reset_caches()
                self._open(create=False)
            return True
        if int(stats["gen"]) == self._generation:
            return False
        with self._lock:
            self._stats = stats
            self._generation = int(stats["gen"])
            self._reset_caches()
            self.meta = self._read_meta()
        return True

    # --- the writer lease -----------------------------------------------------------------------

    def writer(self):
        """Context manager holding the writer lease (one writer at a time across processes and
        machines, advisory: a row in the root collection, renewed while held, taken over when
        its holder stopped renewing for :data:`LEASE_TTL_S` or died on this machine). On first
        entry it finishes or rolls back a write a killed writer left behind.

        Raises:
            StoreBusyError: another writer holds the lease for longer than ``write_wait_s``.
            StoreUnavailableError: the engine refuses writes.
        """
        @contextmanager
        def held() -> Iterator[None]:
            with self._write_lock:
                if self._depth == 0:
                    self._acquire_lease()
                    self._depth = 1
                    try:
                        self._begin_session()
                    except BaseException:
                        self._release_lease()
                        self._depth = 0
                        raise
                else:
                    self._depth += 1
                ok = False
                try:
                    yield
                    ok = True
                except Exception:
                    ok = True  # an ordinary error: what was committed is completed
                    raise
                finally:
                    self._depth -= 1
                    if self._depth == 0:
                        try:
                            if ok:  # not on KeyboardInterrupt: the next writer completes it
                                self._end_session()
                        finally:
                            self._release_lease()
        return held()

    def _lease_row(self) -> dict | None:
        row = self._by_keys("root", ["lease"], ["body"], strong=True).get("lease")
        return json.loads(row["body"]) if row else None

    def _acquire_lease(self) -> None:
        deadline = time.monotonic() + self.write_wait_s
        host = socket.gethostname()
        while True:
            lease = self._lease_row()
            free = lease is None or lease.get("owner") == self._owner or float(lease.get("expires", 0)) < time.time() \
                or (lease.get("host") == host and not pid_alive(int(lease.get("pid", 0))))
            if free:
                self._write_lease()
                if (self._lease_row() or {}).get("owner") == self._owner:
                    break
            if time.monotonic() >= deadline:
                holder = f"{lease.get('host')} pid {lease.get('pid')}" if lease else "another writer"
                raise StoreBusyError(f"the store {self.location} is busy: another process ({holder}) is writing to it",
                                     hint="wait for it to finish, then run the command again")
            time.sleep(0.1)
        stop = threading.Event()
        thread = threading.Thread(target=self._renew, args=(stop,), name="milvus-lease", daemon=True)
        thread.start()
        self._heartbeat = (thread, stop)

    def _write_lease(self) -> None:
        self._upsert("root", [self._kv("lease", "lease", {"owner": self._owner, "host": socket.gethostname(),
                                                          "pid": os.getpid(), "expires": time.time() + LEASE_TTL_S})])

    def _renew(self, stop: threading.Event) -> None:
        while not stop.wait(LEASE_RENEW_S):
            try:
                self._write_lease()
            except Exception as err:  # the next write reports the engine's state
                _log.warning("could not renew the Milvus writer lease: %s", err)

    def _release_lease(self) -> None:
        if self._heartbeat is not None:
            thread, stop = self._heartbeat
            stop.set()
            thread.join(5)
            self._heartbeat = None
        try:
            if (self._lease_row() or {}).get("owner") == self._owner:
                self._delete("root", _in("key", ["lease"]))
        except StoreUnavailableError:
            pass  # expires by itself

    # --- writes ---------------------------------------------------------------------------------

    def _payload_rows(self, doc_id: str, version: str, kind: str, value: Any) -> tuple[list[dict], int]:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts = _pieces(text)
        return [self._kv(f"p:{version}:{kind}:{n:06d}", "part", piece, doc_id, version, raw=True)
                for n, piece in enumerate(parts)], len(parts)

    def _read_payload(self, version: str, kind: str, n: int, strong: bool = True) -> str:
        keys = [f"p:{version}:{kind}:{k:06d}" for k in range(n)]
        rows = self._by_keys("kv", keys, ["body"], strong=strong)
        if len(rows) != n:
            raise _Gone(f"payload {kind} of version {version}")
        return "".join(rows[k]["body"] for k in keys)

    def upsert(self, prepared: PreparedDocument, chunk_vectors: np.ndarray, sentence_vectors: np.ndarray,
               *, root: str = "", size: int = 0, mtime_ns: int = 0) -> None:
        """See :meth:`rag.store.base.Store.upsert` (steps in the module docstring).

        Raises:
            ValueError: vector shapes do not match.
            IngestError: a chunk or sentence text is over Milvus's 65,535-byte VARCHAR limit.
        """
        doc = prepared.document
        dim = int(self.meta.get("dim", 0) or 0)
        n_chunks, n_sentences = len(prepared.chunks), len(prepared.sentences)
        if chunk_vectors.shape != (n_chunks, dim) or sentence_vectors.shape != (n_sentences, dim):
            raise ValueError(f"vectors {chunk_vectors.shape} / {sentence_vectors.shape} do not fit "
                             f"{n_chunks} chunks / {n_sentences} sentences of dimension {dim}")
        for what, text in [*((f"chunk {c.ordinal}", c.clean) for c in prepared.chunks),
                           *((f"chunk {c.ordinal}", c.context) for c in prepared.chunks),
                           *((f"sentence {s.ordinal}", s.span.clean) for s in prepared.sentences),
                           *((f"sentence {s.ordinal}", s.section) for s in prepared.sentences)]:
            if _bytes(text) > VARCHAR_MAX_BYTES:
                raise IngestError(f"{doc.doc_id}: {what} holds {_bytes(text)} bytes of text without a sentence "
                                  f"break, over Milvus's {VARCHAR_MAX_BYTES}-byte VARCHAR limit",
                                  hint="break the document's long lines, or keep it in the embedded store")
        with self.writer():
            self._ensure_vector_collections(dim)
            old = self._doc_row(doc.doc_id, strong=True, cache=False)
            gen = self._take_generation()
            version = uuid.uuid4().hex[:16]
            cdf: Counter = Counter()
            tokens = 0
            for c in prepared.chunks:
                cdf.update(c.terms.keys())
                tokens += sum(c.terms.values())
            deltas = {"documents": 0 if old else 1, "chunks": n_chunks, "sentences": n_sentences,
                      "units": prepared.n_units, "tokens": tokens}
            if old:
                for key in ("chunks", "sentences", "units", "tokens"):
                    deltas[key] -= int(old[key])
            # The sparse weights' avgdl: the archive's mean with this document, so the first
            # document's chunks are weighted against themselves.
            avgdl0 = (self._totals["tokens"] + deltas["tokens"]) / max(1, self._totals["chunks"] + deltas["chunks"])
            payload: list[dict] = []
            parts = {}
            for kind, value in (("text", doc.text), ("pages", list(doc.pages)), ("units", dict(prepared.unit_df)),
                                ("cdf", dict(cdf))):
                rows, parts[kind] = self._payload_rows(doc.doc_id, version, kind, value)
                payload.extend(rows)
            change = {"op": "upsert", "doc_id": doc.doc_id, "gen": gen, "new": version, "new_parts": parts,
                      "old": old["v"] if old else None, "old_parts": old["parts"] if old else None,
                      "deltas": deltas}
            sentence_base = gen << 24  # store-wide sentence ordinals: unique, adjacent within a document
            # The commit row is built first: a refusal then leaves nothing behind.
            row = {"v": version, "gen": gen, "title": doc.title, "date": doc.date, "format": doc.format,
                   "source": doc.path, "root": root, "sha256": prepared.sha256, "size": int(size),
                   "mtime_ns": int(mtime_ns), "added": _now(), "chars": len(doc.text), "chunks": n_chunks,
                   "sentences": n_sentences, "pages": len(doc.pages), "units": prepared.n_units, "tokens": tokens,
                   "parts": parts, "sbase": sentence_base}
            body = self._kv(f"d:{doc.doc_id}", "doc", row, doc.doc_id, version)
            if _bytes(body["body"]) > VARCHAR_MAX_BYTES:
                raise IngestError(f"{doc.doc_id}: its title and source path are over Milvus's "
                                  f"{VARCHAR_MAX_BYTES}-byte VARCHAR limit", hint="shorten the file's title")
            self._upsert("kv", [self._kv(f"i:{gen:012d}", "intent", change, doc.doc_id)])
            self._insert("kv", payload)
            self._insert("sentences", [
                {"pk": f"{version}:{s.ordinal}", "doc_id": doc.doc_id, "version": version, "ordinal": s.ordinal,
                 "start": s.span.start, "end": s.span.end, "clean": s.span.clean, "paragraph": s.paragraph,
                 "heading": bool(s.heading), "section": s.section, "vector": vec.tolist()}
                for s, vec in zip(prepared.sentences, np.asarray(sentence_vectors, dtype=np.float32))])
            chunk_rows = []
            for c, vec in zip(prepared.chunks, np.asarray(chunk_vectors, dtype=np.float32)):
                dl = sum(c.terms.values())
                k0 = K1 * (1 - B + B * dl / avgdl0)
                sparse: dict[int, float] = {}
                for term, tf in c.terms.items():
                    dim_ = term_dim(term)
                    sparse[dim_] = sparse.get(dim_, 0.0) + tf / (tf + k0)
                chunk_rows.append({
                    "pk": f"{version}:{c.ordinal}", "doc_id": doc.doc_id, "version": version, "ordinal": c.ordinal,
                    "start": c.start, "end": c.end, "clean": c.clean, "page": doc.page_of(c.start) or 0,
                    "title": doc.title[:256], "date": doc.date or "", "format": doc.format, "context": c.context,
                    "sentence_lo": c.sentence_lo, "sentence_hi": c.sentence_hi, "dl": dl, "k0": float(k0),
                    "vector": vec.tolist(), "sparse": sparse})
            self._insert("chunks", chunk_rows)
            crash_test_hook("upsert")  # rows written, not committed: invisible, rolled back by the next writer
            self._upsert("kv", [body])  # the commit
            crash_test_hook("milvus-committed")
            self._record_commit(change)
        crash_test_hook("committed")

    def delete(self, doc_id: str) -> bool:
        """Remove a document (its row first: the commit), then its statistics and rows."""
        with self.writer():
            old = self._doc_row(doc_id, strong=True, cache=False)
            if old is None:
                return False
            gen = self._take_generation()
            deltas = {"documents": -1, "chunks": -int(old["chunks"]), "sentences": -int(old["sentences"]),
                      "units": -int(old["units"]), "tokens": -int(old["tokens"])}
            change = {"op": "delete", "doc_id": doc_id, "gen": gen, "new": None, "new_parts": None,
                      "old": old["v"], "old_parts": old["parts"], "deltas": deltas}
            self._upsert("kv", [self._kv(f"i:{gen:012d}", "intent", change, doc_id)])
            self._delete("kv", _in("key", [f"d:{doc_id}"]))  # the commit
            crash_test_hook("delete")
            self._record_commit(change)
        return True

    def touch(self, doc_id: str, size: int, mtime_ns: int) -> None:
        """Record a new size and modification time for an unchanged file (same content)."""
        with self.writer():
            row = self._doc_row(doc_id, strong=True, cache=False)
            if row is not None:
                row = dict(row, size=int(size), mtime_ns=int(mtime_ns))
                self._upsert("kv", [self._kv(f"d:{doc_id}", "doc", {k: v for k, v in row.items() if k != "doc_id"},
                                             doc_id, row["v"])])
                with self._lock:
                    self._docs.pop(doc_id, None)

    def _take_generation(self) -> int:
        gen = self._next_gen
        self._next_gen += 1
        return gen

    def _record_commit(self, change: dict) -> None:
        """A change is committed: its statistics wait in the batch (module docstring), which is
        applied every :data:`STATS_BATCH` changes or :data:`STATS_BATCH_S` seconds, and when the
        writer lease is released."""
        self._pending.append(change)
        self._dirty = True
        for key in self._totals:
            self._totals[key] += int(change["deltas"].get(key, 0))
        if len(self._pending) >= STATS_BATCH or time.monotonic() - self._pending_since >= STATS_BATCH_S:
            self._apply_batch()

    def _apply_batch(self) -> None:
        changes, self._pending = self._pending, []
        self._pending_since = time.monotonic()
        if changes:
            self._apply(changes)

    def _drop_version(self, version: str) -> None:
        for kind in ("chunks", "sentences") if self._ready else ():
            self._delete(kind, f"version == {_lit(version)}")
        self._delete("kv", f'kind == "part" and version == {_lit(version)}')

    def _apply(self, changes: list[dict]) -> None:
        """Apply committed changes' term counts and totals, once, then drop the versions they
        replaced and their intents. Every term row and the statistics row record the generation
        that last changed them; a replay after a crash (the same changes: intents go last) leaves
        rows already at the batch's generation alone."""
        gen = max(int(c["gen"]) for c in changes)
        stats = self._read_stats(strong=True)
        if int(stats["gen"]) < gen:
            delta: dict[str, list[int]] = {}
            for c in changes:
                for sign, version, parts in ((1, c["new"], c["new_parts"]), (-1, c["old"], c["old_parts"])):
                    if not version:
                        continue
                    for kind, slot in (("units", 0), ("cdf", 1)):
                        counts = json.loads(self._read_payload(version, kind, int(parts[kind]), strong=True))
                        for term, count in counts.items():
                            delta.setdefault(term_key(term), [0, 0])[slot] += sign * int(count)
            rows = self._by_keys("kv", list(delta), ["body"], strong=True)
            updated, emptied = [], []
            for key, (du, dc) in delta.items():
                old = json.loads(rows[key]["body"]) if key in rows else {"u": 0, "c": 0, "g": 0}
                if int(old["g"]) >= gen or (du == 0 and dc == 0):
                    continue
                new = {"u": int(old["u"]) + du, "c": int(old["c"]) + dc, "g": gen}
                updated.append(self._kv(key, "term", new))
                if new["u"] <= 0 and new["c"] <= 0:
                    emptied.append(key)
            self._upsert("kv", updated)
            totals = {k: int(stats[k]) + sum(int(c["deltas"].get(k, 0)) for c in changes)
                      for k in ("documents", "chunks", "sentences", "units", "tokens")}
            self._upsert("kv", [self._kv("stats", "stats", dict(totals, gen=gen))])  # readers refresh
            crash_test_hook("milvus-stats")
            for i in range(0, len(emptied), IN_BATCH):  # after the stats row: a replay never needs them
                self._delete("kv", _in("key", emptied[i:i + IN_BATCH]))
        for c in changes:
            if c["old"]:
                self._drop_version(c["old"])
        keys = [f"i:{int(c['gen']):012d}" for c in changes]
        for i in range(0, len(keys), IN_BATCH):
            self._delete("kv", _in("key", keys[i:i + IN_BATCH]))

    def _recover(self) -> None:
        """Finish or roll back what a killed writer left (its intent rows): changes whose commit
        happened are applied as one batch, uncommitted ones have their rows dropped."""
        intents = sorted((json.loads(r["body"]) for r in self._query("kv", 'kind == "intent"', ["body"],
                                                                   limit=QUERY_LIMIT, strong=True)),
                         key=lambda i: int(i["gen"]))
        done = []
        for k, intent in enumerate(intents):
            gen = int(intent["gen"])
            # Committed iff the version that followed it is its own: the next change of the same
            # document started from it (its "old"), or, without one, the document row names it
            # (None = no row, for a removal). Version ids are random, so this is exact.
            following = next((j for j in intents[k + 1:] if j["doc_id"] == intent["doc_id"]), None)
            if following is not None:
                after = following.get("old")
            else:
                doc = self._doc_row(intent["doc_id"], strong=True, cache=False)
                after = doc["v"] if doc else None
            committed = after == intent.get("new")
            if committed:
                done.append(intent)
                continue
            self.notify(f"rolling back an unfinished write of {intent['doc_id']}")
            if intent.get("new"):
                self._drop_version(intent["new"])
            self._delete("kv", _in("key", [f"i:{gen:012d}"]))
        if done:
            self.notify(f"finishing {len(done)} interrupted write(s)")
            self._apply(done)
        if intents:
            self._after_write()

    def _begin_session(self) -> None:
        """At the lease's acquisition: repair, then number the session's changes."""
        self._recover()
        stats = self._read_stats(strong=True)
        self._next_gen = int(stats["gen"]) + 1
        self._totals = {k: int(stats[k]) for k in ("documents", "chunks", "sentences", "units", "tokens")}
        self._pending, self._pending_since, self._dirty = [], time.monotonic(), False

    def _end_session(self) -> None:
        """At the lease's release: apply the waiting batch, flush (seal the written segments, so
        they are indexed), and adopt this handle's own changes."""
        self._apply_batch()
        if self._dirty:
            for kind in ("kv", "chunks", "sentences") if self._ready else ("kv",):
                self._call(f"flush {self._name(kind)}", self._client.flush, self._name(kind))
            self._dirty = False
            self._after_write()

    def _after_write(self) -> None:
        """Adopt this handle's own writes at once (a reader's probe may lag by the staleness bound)."""
        with self._lock:
            self._stats = self._read_stats(strong=True)
            self._generation = int(self._stats["gen"])
            self._reset_caches()

    # --- documents ------------------------------------------------------------------------------

    def _doc_row(self, doc_id: str, strong: bool = True, cache: bool = True) -> dict | None:
        if cache:
            with self._lock:
                if doc_id in self._docs:
                    self._docs.move_to_end(doc_id)
                    return self._docs[doc_id]
        rows = self._doc_rows([doc_id], strong=strong, cache=cache)
        return rows.get(doc_id)

    def _doc_rows(self, doc_ids: Sequence[str], strong: bool = True, cache: bool = True) -> dict[str, dict | None]:
        """Document rows (facts and committed version) by id; None for unknown ids."""
        out: dict[str, dict | None] = {}
        missing = []
        with self._lock:
            for doc_id in dict.fromkeys(doc_ids):
                if cache and doc_id in self._docs:
                    out[doc_id] = self._docs[doc_id]
                else:
                    missing.append(doc_id)
        if missing:
            found = self._by_keys("kv", [f"d:{d}" for d in missing], ["body"], strong=strong)
            with self._lock:
                for doc_id in missing:
                    row = found.get(f"d:{doc_id}")
                    value = dict(json.loads(row["body"]), doc_id=doc_id) if row else None
                    out[doc_id] = value
                    if cache:
                        self._docs[doc_id] = value
                        while len(self._docs) > DOCUMENT_CACHE:
                            self._docs.popitem(last=False)
        return out

    def _text(self, row: dict) -> tuple[str, tuple[int, ...]]:
        """A document version's stored text and PDF page starts (cached by version)."""
        version = row["v"]
        with self._lock:
            if version in self._texts:
                self._texts.move_to_end(version)
                return self._texts[version]
        text = self._read_payload(version, "text", int(row["parts"]["text"]))
        pages = tuple(json.loads(self._read_payload(version, "pages", int(row["parts"]["pages"]))))
        if len(text) != int(row["chars"]):
            raise CorruptIndexError(f"the stored text of {row['doc_id']} has {len(text)} characters, "
                                    f"its document row says {row['chars']}",
                                    hint="re-add the document (`rag add --replace PATH`)")
        with self._lock:
            self._texts[version] = (text, pages)
            while len(self._texts) > DOCUMENT_CACHE:
                self._texts.popitem(last=False)
        return text, pages

    def document(self, doc_id: str) -> Document | None:
        row = self._doc_row(doc_id)
        if row is None:
            return None
        try:
            text, pages = self._text(row)
        except _Gone:  # replaced or removed since the row was read
            self.refresh()
            row = self._doc_row(doc_id, strong=True, cache=False)
            if row is None:
                return None
            text, pages = self._text(row)
        return Document(doc_id=doc_id, path=row["source"], title=row["title"], date=row["date"], text=text,
                        format=row["format"], pages=pages)

    @staticmethod
    def _info(row: dict) -> DocumentInfo:
        return DocumentInfo(doc_id=row["doc_id"], title=row["title"], date=row["date"], format=row["format"],
                            source=row["source"], sha256=row["sha256"], added=row["added"], chunks=int(row["chunks"]),
                            chars=int(row["chars"]), pages=int(row["pages"]), root=row["root"], size=int(row["size"]),
                            mtime_ns=int(row["mtime_ns"]))

    def document_info(self, doc_id: str) -> DocumentInfo | None:
        row = self._doc_row(doc_id, strong=True, cache=False)
        return None if row is None else self._info(row)

    def list_documents(self) -> list[DocumentInfo]:
        rows = [dict(json.loads(r["body"]), doc_id=r["doc_id"])
                for r in self._iterate("kv", 'kind == "doc"', ["doc_id", "body"], strong=True)]
        return sorted((self._info(r) for r in rows), key=lambda i: i.doc_id)

    # --- term statistics (ArchiveView) ----------------------------------------------------------

    def _term_counts(self, terms: Sequence[str]) -> dict[str, tuple[int, int]]:
        """term -> (units containing it, chunks containing it), cached until the next change."""
        with self._lock:
            missing = [t for t in dict.fromkeys(terms) if t not in self._terms]
        if missing:
            keys = {term_key(t): t for t in missing}
            rows = self._by_keys("kv", list(keys), ["body"])
            with self._lock:
                if len(self._terms) > TERM_CACHE:
                    self._terms.clear()
                for key, term in keys.items():
                    body = json.loads(rows[key]["body"]) if key in rows else {"u": 0, "c": 0}
                    self._terms[term] = (max(0, int(body["u"])), max(0, int(body["c"])))
        with self._lock:
            return {t: self._terms.get(t, (0, 0)) for t in terms}

    def idf(self, token: str) -> float:
        return idf_from_counts(int(self._stats.get("units", 0)), self._term_counts([token])[token][0])

    def mentions(self, term: str) -> bool:
        return self._term_counts([term])[term][0] > 0

    # --- searches -------------------------------------------------------------------------------

    def _committed(self, hits: list[dict]) -> list[tuple[dict, dict]]:
        """The hits whose version is their document's committed one, with the document row."""
        rows = self._doc_rows([h["entity"]["doc_id"] for h in hits])
        out = []
        for h in hits:
            row = rows.get(h["entity"]["doc_id"])
            if row is not None and row["v"] == h["entity"]["version"]:
                out.append((h, row))
        return out

    def _search(self, field: str, query: Any, top_k: int, fields: list[str], metric_params: Callable[[int], dict]):
        """Committed hits of one search, best first: asks for more when rows of unfinished
        writes crowd out the ``top_k`` (rare: only while a write runs or after a crash)."""
        if not self._has_vector_collections():
            return []
        limit = top_k
        while True:
            limit = min(limit, QUERY_LIMIT)
            result = self._call(f"search {self._name('chunks')}", self._client.search, self._name("chunks"),
                                data=[query], anns_field=field, limit=limit,
                                output_fields=["doc_id", "version", "ordinal", *fields],
                                search_params={"metric_type": "IP", "params": metric_params(limit)},
                                consistency_level="Bounded")
            hits = list(result[0]) if result else []
            kept = self._committed(hits)
            if len(kept) >= top_k or len(hits) < limit or limit >= QUERY_LIMIT:
                return kept
            limit *= 2

    def dense_search(self, query_vector: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        if top_k <= 0:
            return []
        query = np.asarray(query_vector, dtype=np.float32).reshape(-1).tolist()
        _, params = DENSE_INDEXES[self.index_type]
        kept = self._search("vector", query, top_k, [], params)
        pairs = [(f"{h['entity']['doc_id']}#{h['entity']['ordinal']}", float(h["distance"])) for h, _ in kept]
        return sorted(pairs, key=lambda p: -p[1])[:top_k]

    def _bm25_query(self, tokens: Sequence[str]) -> tuple[dict[int, float], dict[str, tuple[int, float]]]:
        """The query's sparse vector and, per distinct token, its count and idf (chunk level)."""
        n = int(self._stats.get("chunks", 0))
        counts = Counter(tokens)
        stats = self._term_counts(list(counts))
        vector: dict[int, float] = {}
        weights = {}
        for term, mult in counts.items():
            df = stats[term][1]
            if df <= 0:
                continue
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            weights[term] = (mult, idf)
            vector[term_dim(term)] = vector.get(term_dim(term), 0.0) + mult * idf
        return vector, weights

    def lexical_search(self, tokens: Sequence[str], top_k: int) -> list[tuple[str, float]]:
        """BM25 (bm25s's scores, see the module docstring): candidates by the sparse inner
        product, then the best :data:`LEXICAL_POOL` re-scored with the current statistics."""
        n = int(self._stats.get("chunks", 0))
        if not tokens or top_k <= 0 or n == 0:
            return []
        vector, weights = self._bm25_query(tokens)
        if not vector:
            return []
        avgdl = int(self._stats["tokens"]) / n
        kept = self._search("sparse", vector, max(top_k, LEXICAL_POOL), ["dl", "k0", "sparse"], lambda limit: {})
        scored = []
        for h, _ in kept:
            e = h["entity"]
            sparse = e["sparse"]
            norm = K1 * (1 - B + B * int(e["dl"]) / avgdl)
            k0 = float(e["k0"])
            score = 0.0
            for term, (mult, idf) in weights.items():
                w = float(sparse.get(term_dim(term), 0.0))
                if w <= 0.0:
                    continue
                tf = max(1, round(w * k0 / (1.0 - w))) if w < 1.0 else 65535
                score += mult * idf * tf / (tf + norm)
            if score > 0:
                scored.append((e["doc_id"], int(e["ordinal"]), score))
        scored.sort(key=lambda s: (-s[2], s[0], s[1]))
        return [(f"{d}#{o}", s) for d, o, s in scored[:top_k]]

    def engine_hybrid_search(self, query_vector: np.ndarray, tokens: Sequence[str], top_k: int,
                             ranker: str = "rrf", dense_weight: float = 0.5) -> list[tuple[str, float]]:
        """Hybrid search fused by the engine (``hybrid_search`` with ``RRFRanker(60)`` or
        ``WeightedRanker``) over the chunk vectors and the BM25 sparse vectors, without our
        best-sentence re-scoring or min-max fusion. Kept for the fusion measurement
        (``eval/bench_milvus.py quality``); the retriever fuses client-side (README).

        Returns:
            ``(chunk_id, engine score)`` pairs, best first, at most ``top_k``.
        """
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        if not self._ready or int(self._stats.get("chunks", 0)) == 0:
            return []
        vector, _ = self._bm25_query(tokens)
        _, params = DENSE_INDEXES[self.index_type]
        limit = max(top_k, LEXICAL_POOL)
        requests = [AnnSearchRequest(data=[np.asarray(query_vector, np.float32).tolist()], anns_field="vector",
                                     param={"metric_type": "IP", "params": params(limit)}, limit=limit)]
        if vector:
            requests.append(AnnSearchRequest(data=[vector], anns_field="sparse", param={"metric_type": "IP"},
                                             limit=limit))
        rank = RRFRanker(60) if ranker == "rrf" else WeightedRanker(
            *([dense_weight, 1 - dense_weight][:len(requests)]))
        result = self._call("hybrid search", self._client.hybrid_search, self._name("chunks"), requests, rank,
                            limit=limit, output_fields=["doc_id", "version", "ordinal"], consistency_level="Bounded")
        kept = self._committed(list(result[0]) if result else [])
        return [(f"{h['entity']['doc_id']}#{h['entity']['ordinal']}", float(h["distance"])) for h, _ in kept][:top_k]

    # --- chunks ---------------------------------------------------------------------------------

    def _chunk_keys(self, chunk_ids: Sequence[str]) -> dict[str, tuple[str, int, dict]]:
        """pk -> (chunk_id, ordinal, document row) for the ids of committed documents."""
        parsed = []
        for chunk_id in chunk_ids:
            doc_id, _, ordinal = chunk_id.rpartition("#")
            if doc_id and ordinal.isdigit():
                parsed.append((chunk_id, doc_id, int(ordinal)))
        rows = self._doc_rows([p[1] for p in parsed])
        out = {}
        for chunk_id, doc_id, ordinal in parsed:
            row = rows.get(doc_id)
            if row is not None and ordinal < int(row["chunks"]):
                out[f"{row['v']}:{ordinal}"] = (chunk_id, ordinal, row)
        return out

    def fetch_chunks(self, chunk_ids: Sequence[str], with_sentences: bool = False) -> dict[str, StoredChunk]:
        keys = self._chunk_keys(chunk_ids)
        if not keys or not self._has_vector_collections():
            return {}
        rows = self._by_keys("chunks", list(keys), ["start", "end", "clean", "context", "page", "sentence_lo",
                                                     "sentence_hi"])
        sentence_rows: dict[str, dict] = {}
        if with_sentences:
            wanted = [f"{keys[pk][2]['v']}:{s}" for pk, r in rows.items()
                      for s in range(int(r["sentence_lo"]), int(r["sentence_hi"]))]
            sentence_rows = self._by_keys("sentences", wanted, ["start", "end", "clean", "paragraph", "heading",
                                                                 "section", "vector", "ordinal"])
        out: dict[str, StoredChunk] = {}
        for pk, r in rows.items():
            chunk_id, _, doc = keys[pk]
            try:
                text, _ = self._text(doc)
            except _Gone:
                continue  # replaced or removed since the document row was read
            sentences = []
            for s in range(int(r["sentence_lo"]), int(r["sentence_hi"])):
                srow = sentence_rows.get(f"{doc['v']}:{s}")
                if srow is None:
                    continue
                start, end = int(srow["start"]), int(srow["end"])
                sentences.append(StoredSentence(
                    span=Span(doc["doc_id"], start, end, text[start:end], srow["clean"]),
                    vector=np.asarray(srow["vector"], dtype=np.float32), paragraph=int(srow["paragraph"]),
                    heading=bool(srow["heading"]), section=srow["section"],
                    sentence_index=int(doc["sbase"]) + int(srow["ordinal"])))
            start, end = int(r["start"]), int(r["end"])
            out[chunk_id] = StoredChunk(
                chunk=Chunk(chunk_id=chunk_id, doc_id=doc["doc_id"], start=start, end=end, text=text[start:end],
                            clean=r["clean"], title=doc["title"], context=r["context"]),
                page=int(r["page"]) or None, sentences=tuple(sentences))
        return {chunk_id: out[chunk_id] for chunk_id in chunk_ids if chunk_id in out}

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Chunk vector float32 (dim,) and its sentences' vectors float32 (m, dim) per chunk id."""
        keys = self._chunk_keys(chunk_ids)
        if not keys or not self._has_vector_collections():
            return {}
        rows = self._by_keys("chunks", list(keys), ["vector", "sentence_lo", "sentence_hi"])
        wanted = [f"{keys[pk][2]['v']}:{s}" for pk, r in rows.items()
                  for s in range(int(r["sentence_lo"]), int(r["sentence_hi"]))]
        sentence_rows = self._by_keys("sentences", wanted, ["vector"])
        dim = int(self.meta.get("dim", 0) or 0)
        out = {}
        for pk, r in rows.items():
            chunk_id, _, doc = keys[pk]
            members = [sentence_rows[key]["vector"] for s in range(int(r["sentence_lo"]), int(r["sentence_hi"]))
                       for key in (f"{doc['v']}:{s}",) if key in sentence_rows]
            out[chunk_id] = (np.asarray(r["vector"], dtype=np.float32),
                             np.asarray(members, dtype=np.float32).reshape(-1, dim))
        return out

    def warm_caches(self) -> None:
        """Make sure the collections are loaded (a restarted engine releases them)."""
        for kind in ("kv", "chunks", "sentences") if self._ready else ("kv",):
            self._load(kind)

    # --- rebuilds -------------------------------------------------------------------------------

    def new_set(self, expect: dict[str, Any]) -> "MilvusStore":
        """A handle on a fresh, empty set of collections under the same prefix (not yet active),
        for a rebuild; sets a killed rebuild left behind are dropped first. Call under
        :meth:`writer`; :meth:`activate` switches readers to it.
        """
        names = self._collections()
        number = 1 + max([int(m.group(1)) for n in names for m in (re.fullmatch(
            rf"{re.escape(self.prefix)}_s(\d+)_(kv|chunks|sentences)", n),) if m] or [0])
        for name in names:
            m = re.fullmatch(rf"{re.escape(self.prefix)}_(s\d+)_(kv|chunks|sentences)", name)
            if m and m.group(1) != self._set:
                self._call(f"drop {name}", self._client.drop_collection, name)
        fresh = copy.copy(self)
        fresh._shared = True  # this handle's connection and lease; closing it closes nothing
        fresh._depth = 1  # writes under this handle's lease (taken by the caller)
        fresh._heartbeat = None
        fresh._lock = threading.RLock()
        fresh._reset_caches()
        fresh._ready = False
        fresh._set = f"s{number}"
        fresh._create("kv")
        fresh._upsert("kv", [fresh._kv(f"m:{k}", "meta", v) for k, v in
                             {"format": STORE_FORMAT, "store_uuid": uuid.uuid4().hex, "created": _now(),
                              **expect}.items()])
        fresh._ensure_vector_collections(int(expect["dim"]))
        fresh.meta = fresh._read_meta()
        fresh._stats = fresh._read_stats(strong=True)
        fresh._generation = 0
        fresh._begin_session()
        return fresh

    def activate(self, fresh: "MilvusStore") -> None:
        """Point the root at ``fresh``'s set, mark the old set as moved (readers re-open) and drop
        it; this handle then serves the new set."""
        fresh._end_session()
        old_set = self._set
        self._upsert("root", [self._kv("active", "meta", {"set": fresh._set, "format": STORE_FORMAT})])
        stats = dict(self._read_stats(strong=True), moved=True)
        self._upsert("kv", [self._kv("stats", "stats", stats)])
        for kind in ("kv", "chunks", "sentences"):
            name = f"{self.prefix}_{old_set}_{kind}"
            if name in self._collections():
                self._call(f"drop {name}", self._client.drop_collection, name)
        with self._lock:
            self._reset_caches()
            self._open(create=False)

    # --- housekeeping ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed or self._shared:
            return
        self._closed = True
        try:
            self._client.close()
        except Exception:
            pass
        if self._lite_path is not None:
            _release_lite(self._lite_path)

    def integrity_problems(self) -> list[str]:
        """Cross-checks (the crash tests run them after every kill): no intent left, every
        document's version has exactly its chunk, sentence and payload rows, no row of another
        version, term statistics and totals equal to the sums over the documents. Reads every
        row: for tests and diagnosis, not for large stores."""
        problems = []
        if self._query("kv", 'kind == "intent"', ["key"], limit=10, strong=True):
            problems.append("a write intent is left")
        docs = {r["doc_id"]: dict(json.loads(r["body"]), doc_id=r["doc_id"])
                for r in self._iterate("kv", 'kind == "doc"', ["doc_id", "body"], strong=True)}
        versions = {row["v"]: row for row in docs.values()}
        for kind, count_key in (("chunks", "chunks"), ("sentences", "sentences")):
            if self._name(kind) not in self._collections():
                continue
            seen = Counter(r["version"] for r in self._iterate(kind, "ordinal >= 0", ["version"], strong=True))
            for version, n in seen.items():
                if version not in versions:
                    problems.append(f"{n} {kind} rows of version {version}, which no document names")
                elif n != int(versions[version][count_key]):
                    problems.append(f"{versions[version]['doc_id']}: {n} {kind} rows, its row says "
                                    f"{versions[version][count_key]}")
            for version, row in versions.items():
                if int(row[count_key]) and version not in seen:
                    problems.append(f"{row['doc_id']}: no {kind} rows")
        parts = Counter(r["version"] for r in self._iterate("kv", 'kind == "part"', ["version"], strong=True))
        for version, n in parts.items():
            if version not in versions:
                problems.append(f"{n} payload rows of version {version}, which no document names")
            elif n != sum(int(v) for v in versions[version]["parts"].values()):
                problems.append(f"{versions[version]['doc_id']}: {n} payload rows")
        expect: dict[str, list[int]] = {}
        totals = Counter()
        for row in docs.values():
            totals.update({"documents": 1, "chunks": int(row["chunks"]), "sentences": int(row["sentences"]),
                           "units": int(row["units"]), "tokens": int(row["tokens"])})
            for kind, slot in (("units", 0), ("cdf", 1)):
                for term, count in json.loads(self._read_payload(row["v"], kind, int(row["parts"][kind]),
                                                                 strong=True)).items():
                    expect.setdefault(term_key(term), [0, 0])[slot] += int(count)
        found = {r["key"]: json.loads(r["body"]) for r in self._iterate("kv", 'kind == "term"', ["key", "body"],
                                                                        strong=True)}
        for key, (u, c) in expect.items():
            got = found.get(key, {"u": 0, "c": 0})
            if (int(got["u"]), int(got["c"])) != (u, c):
                problems.append(f"term row {key}: ({got['u']}, {got['c']}) stored, ({u}, {c}) in the documents")
                break
        if any((int(v["u"]) > 0 or int(v["c"]) > 0) and k not in expect for k, v in found.items()):
            problems.append("term rows count documents that are gone")
        stats = self._read_stats(strong=True)
        for key in ("documents", "chunks", "sentences", "units", "tokens"):
            if int(stats[key]) != totals[key]:
                problems.append(f"the statistics row says {key}={stats[key]}, the documents {totals[key]}")
        return problems


class _Gone(CorruptIndexError):
    """A collection or a version's rows disappeared (a rebuild switched sets, or a concurrent
    replace deleted an old version); callers re-read or skip, and one that cannot reaches the
    user as a store error."""

    def __init__(self, message: str):
        super().__init__(f"the store changed while it was read ({message})", hint="run the command again")
