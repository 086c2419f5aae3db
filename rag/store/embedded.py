"""The embedded store: SQLite (stdlib) as the source of truth, FAISS and BM25 as derived caches.

* **Durability.** WAL journal (readers in other processes keep answering while a writer
  commits), ``synchronous=NORMAL`` (a committed transaction survives the process being killed).
  Each document is one transaction: rows, vectors, term counts and a change-log entry together.
* **One writer.** :meth:`EmbeddedStore.writer` holds an ``flock`` across a whole ``add``/``sync``/
  ``remove`` run; a second writer waits ``write_wait_s`` seconds, then gets ``StoreBusyError``.
* **Caches.** The FAISS index and the BM25 postings are built from the store (no model needed),
  saved as checksummed snapshots tagged with the store generation they reflect, and brought up to
  date by replaying the change log. A missing, corrupt or foreign snapshot is rebuilt, never used.
* **Checksums.** Vectors and stored texts carry a CRC-32 checked when read.

Tables: ``meta`` (key/value), ``documents``, ``chunks`` and ``sentences`` (a document's chunk and
sentence rows have consecutive ids: id = first id + ordinal), ``terms`` (token -> id, units
containing it), ``changes`` (the change log; its last id is the generation). A chunk row carries
its own vector and, in a second blob, the vectors of the sentences inside it, so re-scoring 100
dense candidates by their best sentence reads 100 rows (a sentence in two overlapping chunks is
stored twice: ~20% more sentence vectors, measured 5x fewer rows read per question).
"""

from __future__ import annotations

import datetime as _dt
from bisect import bisect_right
import json
import os
import shutil
import signal
import sqlite3
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from rag.archive import idf_from_counts
from rag.errors import CacheDirError, CorruptIndexError, IndexMismatchError
from rag.types import Chunk, Document, Span

from .base import DocumentInfo, PreparedDocument, StoredChunk, StoredSentence
from .dense import FLAT_MAX, DenseIndex
from .files import FileLock, SnapshotDir, load_npy, pid_alive, save_npy
from .lexical import LexicalIndex
from .meta import check_meta

#: Bump when tables or their meaning change; an older store is then rebuilt from its texts.
STORE_FORMAT = 1
#: Bump when the cache snapshot layout changes.
CACHE_FORMAT = 3
#: Replaying more chunk changes than this (or 10% of the chunks) saves a fresh snapshot, so the
#: next cold start does not replay them again.
SAVE_AFTER_CHUNKS = 2_000
#: Held-out queries used to calibrate the IVF index's nprobe (:meth:`DenseIndex.calibrate`);
#: 200 queries x 10 neighbours put the standard error of a recall near 0.95 at about 0.005.
CALIBRATION_QUERIES = 200
#: Documents whose stored text stays in memory (the answerer reads a few per question).
DOCUMENT_CACHE = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
    date TEXT, format TEXT NOT NULL, source TEXT NOT NULL, root TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, added TEXT NOT NULL,
    text TEXT NOT NULL, text_crc INTEGER NOT NULL, pages TEXT NOT NULL,
    n_units INTEGER NOT NULL, unit_terms BLOB NOT NULL,
    chunk_lo INTEGER NOT NULL, n_chunks INTEGER NOT NULL, sentence_lo INTEGER NOT NULL,
    n_sentences INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc INTEGER NOT NULL, ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, end INTEGER NOT NULL, clean TEXT NOT NULL, context TEXT NOT NULL,
    sentence_lo INTEGER NOT NULL, sentence_hi INTEGER NOT NULL, terms BLOB NOT NULL,
    vector BLOB NOT NULL, vector_crc INTEGER NOT NULL,
    sentence_vectors BLOB NOT NULL, sentence_vectors_crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sentences(
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc INTEGER NOT NULL, ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, end INTEGER NOT NULL, clean TEXT NOT NULL, paragraph INTEGER NOT NULL,
    heading INTEGER NOT NULL, section TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms(id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE,
    units INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS changes(generation INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL,
    doc_id TEXT NOT NULL, chunk_lo INTEGER NOT NULL, chunk_hi INTEGER NOT NULL);
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def crash_test_hook(stage: str) -> None:
    """Crash-test hook: ``RAG_TEST_CRASH=stage:n`` kills this process with SIGKILL the n-th time
    ``stage`` is reached (stages: ``upsert`` inside a document's transaction before COMMIT,
    ``committed`` after it, ``delete`` inside a removal, ``removed`` after it);
    ``RAG_TEST_PAUSE_S`` sleeps at every ``committed`` and ``removed``. Unset in normal use."""
    spec = os.environ.get("RAG_TEST_CRASH")
    if spec:
        name, _, count = spec.partition(":")
        if name == stage:
            counter = _HOOK_COUNTS[stage] = _HOOK_COUNTS.get(stage, 0) + 1
            if counter >= int(count or 1):
                os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("RAG_TEST_PAUSE_S")
    if pause and stage in ("committed", "removed"):
        time.sleep(float(pause))


_HOOK_COUNTS: dict[str, int] = {}


def _f16(vectors: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.asarray(vectors, dtype=np.float16)]


def _check(blob: bytes, crc: int, what: str) -> None:
    if zlib.crc32(blob) != crc:
        raise CorruptIndexError(f"the stored vector of {what} fails its checksum",
                                hint="re-add the document (`rag add --replace PATH`) or run `rag index --rebuild`")


def _vector(blob: bytes, crc: int, what: str) -> np.ndarray:
    _check(blob, crc, what)
    return np.frombuffer(blob, dtype=np.float16).astype(np.float32)


def _decode(blobs: list[bytes], dim: int) -> np.ndarray:
    """float32 (len(blobs), dim) from float16 vector blobs, in one conversion."""
    if not blobs or dim == 0:
        return np.zeros((len(blobs), dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), dim).astype(np.float32)


def _pack_terms(ids: Sequence[int], counts: Sequence[int]) -> bytes:
    return np.asarray(ids, dtype=np.int32).tobytes() + np.asarray(counts, dtype=np.int32).tobytes()


def _unpack_terms(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    both = np.frombuffer(blob, dtype=np.int32)
    half = len(both) // 2
    return both[:half], both[half:]


class EmbeddedStore:
    """The default :class:`rag.store.base.Store`: one folder holding ``store.sqlite``, the writer
    lock and the cache snapshots.

    Args:
        directory: The store folder (created when ``create``).
        expect: Metadata the store must match (:func:`rag.store.meta.expected_meta`); a new or empty
            store adopts it. None skips the check (listing, removing).
        create: Create the folder and tables when missing (else :class:`CorruptIndexError`).
        notify: One-line progress messages (cache rebuilds).
        write_wait_s: How long a second writer waits for the lock before ``StoreBusyError``.

    Raises:
        CacheDirError: the folder cannot be created.
        IndexMismatchError: the store was built with other settings or another model.
        CorruptIndexError: not a store, or a store of an unknown format.
    """

    def __init__(self, directory: Path | str, expect: dict[str, Any] | None = None, *, create: bool = True,
                 notify: Callable[[str], None] | None = None, write_wait_s: float = 10.0):
        self.directory = Path(directory)
        self.path = self.directory / "store.sqlite"
        self.notify = notify or (lambda message: None)
        if not self.path.is_file():
            if not create:
                raise CorruptIndexError(f"no store at {self.directory}", hint="run `rag sync` or `rag add PATH`")
            if self.directory.exists() and any(p for p in self.directory.iterdir()
                                               if not p.name.startswith((".", "writer.lock", "cache"))):
                raise CacheDirError(f"{self.directory} exists and is not a store; refusing to use it",
                                    hint="choose an empty or new --index-dir / RAG_INDEX_DIR")
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise CacheDirError(f"cannot create the store folder {self.directory}: {err.strerror or err}",
                                    hint="set RAG_HOME to a writable directory") from err
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.RLock()
        self._writer = FileLock(self.directory / "writer.lock", wait_s=write_wait_s)
        self._snapshots = SnapshotDir(self.directory / "cache")
        self._docs: OrderedDict[str, Document | None] = OrderedDict()
        self._term_ids: dict[str, int] = {}
        self._map: ChunkMap | None = None
        self._dense: DenseIndex | None = None
        self._lexical: LexicalIndex | None = None
        self._cache_generation = 0
        self._replayed_chunks = 0
        self._calibration: dict = {}
        try:
            self._init_schema()
        except sqlite3.DatabaseError as err:
            raise CorruptIndexError(f"{self.path} is not a readable store: {err}",
                                    hint=f"move it away and run `rag sync`, or `rag index --rebuild`") from err
        self.meta = self._read_meta()
        if str(self.meta.get("format")) != str(STORE_FORMAT):
            raise IndexMismatchError(f"the store at {self.directory} has format {self.meta.get('format')}, "
                                     f"this version reads {STORE_FORMAT}", hint="run `rag index --rebuild`")
        if expect is not None:
            self.adopt_or_check(expect)
        self._generation = self.generation()

    # --- connections and metadata -------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=60000")
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                pass  # a read-only folder: reads still work on an existing WAL database
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        conn = self._conn()
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
            return
        with self._transaction() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            defaults = {"format": STORE_FORMAT, "store_uuid": uuid.uuid4().hex, "created": _now(),
                        "n_units": 0}
            conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in defaults.items()])

    def _read_meta(self) -> dict[str, Any]:
        rows = self._conn().execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def adopt_or_check(self, expect: dict[str, Any]) -> None:
        """Record ``expect`` in an empty store, or check a filled one against it.

        Raises:
            IndexMismatchError: the store holds documents built differently.
        """
        if all(str(self.meta.get(k)) == str(v) for k, v in expect.items()):
            return
        if self.count_documents() == 0:
            with self._writer.held(), self._transaction() as conn:
                conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in expect.items()])
            self.meta = self._read_meta()
            return
        check_meta(self.meta, expect, str(self.directory))

    @property
    def location(self) -> str:
        """Where the store lives (for messages)."""
        return str(self.directory)

    @property
    def write_wait_s(self) -> float:
        """Seconds a writer waits for another process's writer lock before ``StoreBusyError``."""
        return self._writer.wait_s

    @write_wait_s.setter
    def write_wait_s(self, seconds: float) -> None:
        self._writer.wait_s = seconds

    def count_documents(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM documents").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self._conn().execute("SELECT coalesce(sum(n_chunks), 0) FROM documents").fetchone()[0])

    def count_sentences(self) -> int:
        return int(self._conn().execute("SELECT coalesce(sum(n_sentences), 0) FROM documents").fetchone()[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Record one metadata value (e.g. a corpus folder's signature at its last sync)."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))
        self.meta[key] = value

    def generation(self) -> int:
        row = self._conn().execute("SELECT max(generation) FROM changes").fetchone()
        return int(row[0] or 0)

    def refresh(self) -> bool:
        generation = self.generation()
        if generation == self._generation:
            return False
        with self._lock:
            self._generation = generation
            self._docs.clear()
            self._map = None
            self.meta = self._read_meta()
            if self._dense is not None:
                self._replay()
        return True

    def writer(self):
        """Context manager holding the writer lock (see the module docstring); checks first that
        the store can be written, so nothing is embedded for a store that cannot take it.

        Raises:
            StoreBusyError: another process writes for longer than ``write_wait_s``.
            CacheDirError: the store folder or database is read-only.
        """
        @contextmanager
        def held() -> Iterator[None]:
            with self._writer.held():
                try:
                    conn = self._conn()
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_writer', ?)",
                                 (json.dumps(os.getpid()),))
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as err:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise CacheDirError(f"cannot write the store at {self.directory}: {err}",
                                        hint="set RAG_HOME to a writable directory") from err
                yield
        return held()

    # --- writes -------------------------------------------------------------------------------

    def _term_id_map(self, conn: sqlite3.Connection, terms: set[str]) -> dict[str, int]:
        missing = [t for t in terms if t not in self._term_ids]
        if missing:
            conn.executemany("INSERT OR IGNORE INTO terms(term) VALUES (?)", [(t,) for t in missing])
            for start in range(0, len(missing), 900):
                part = missing[start:start + 900]
                rows = conn.execute(f"SELECT term, id FROM terms WHERE term IN ({','.join('?' * len(part))})", part)
                self._term_ids.update(rows.fetchall())
        return {t: self._term_ids[t] for t in terms}

    def upsert(self, prepared: PreparedDocument, chunk_vectors: np.ndarray, sentence_vectors: np.ndarray,
               *, root: str = "", size: int = 0, mtime_ns: int = 0) -> None:
        """See :meth:`rag.store.base.Store.upsert`.

        Args:
            root: The corpus folder the file belongs to (``""`` for files added from elsewhere
                and uploads); ``sync`` of that folder owns the document.
            size, mtime_ns: The source file's size and modification time, so ``sync`` can skip
                hashing unchanged files.
        """
        doc = prepared.document
        dim = int(self.meta.get("dim", 0) or 0)
        n_chunks, n_sentences = len(prepared.chunks), len(prepared.sentences)
        if chunk_vectors.shape != (n_chunks, dim) or sentence_vectors.shape != (n_sentences, dim):
            raise ValueError(f"vectors {chunk_vectors.shape} / {sentence_vectors.shape} do not fit "
                             f"{n_chunks} chunks / {n_sentences} sentences of dimension {dim}")
        with self._writer.held(), self._transaction() as conn:
            try:
                self._delete_locked(conn, doc.doc_id)
                vocab = set(prepared.unit_df)
                for chunk in prepared.chunks:
                    vocab.update(chunk.terms)
                ids = self._term_id_map(conn, vocab)
                unit_ids = [ids[t] for t in prepared.unit_df]
                unit_counts = list(prepared.unit_df.values())
                text = doc.text
                cur = conn.execute(
                    "INSERT INTO documents(doc_id, title, date, format, source, root, sha256, size, mtime_ns,"
                    " added, text, text_crc, pages, n_units, unit_terms, chunk_lo, n_chunks, sentence_lo,"
                    " n_sentences) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,0,?)",
                    (doc.doc_id, doc.title, doc.date, doc.format, doc.path, root, prepared.sha256, size,
                     mtime_ns, _now(), text, zlib.crc32(text.encode("utf-8", "surrogatepass")),
                     json.dumps(list(doc.pages)), prepared.n_units, _pack_terms(unit_ids, unit_counts),
                     n_chunks, n_sentences))
                doc_row = cur.lastrowid
                # Explicit consecutive ids (one writer holds the lock), inserted in one call per table.
                sentence_lo = self._next_id(conn, "sentences")
                conn.executemany(
                    "INSERT INTO sentences(id, doc, ordinal, start, end, clean, paragraph, heading, section)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    [(sentence_lo + k, doc_row, s.ordinal, s.span.start, s.span.end, s.span.clean, s.paragraph,
                      int(s.heading), s.section) for k, s in enumerate(prepared.sentences)])
                half_sentences = np.asarray(sentence_vectors, dtype=np.float16)
                chunk_lo = self._next_id(conn, "chunks")
                rows = []
                for k, (c, blob) in enumerate(zip(prepared.chunks, _f16(chunk_vectors))):
                    terms = [ids[t] for t in c.terms]
                    members = half_sentences[c.sentence_lo:c.sentence_hi].tobytes()
                    rows.append((chunk_lo + k, doc_row, c.ordinal, c.start, c.end, c.clean, c.context,
                                 c.sentence_lo, c.sentence_hi, _pack_terms(terms, list(c.terms.values())), blob,
                                 zlib.crc32(blob), members, zlib.crc32(members)))
                conn.executemany(
                    "INSERT INTO chunks(id, doc, ordinal, start, end, clean, context, sentence_lo, sentence_hi,"
                    " terms, vector, vector_crc, sentence_vectors, sentence_vectors_crc)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                if not n_chunks:
                    chunk_lo = 0
                if not n_sentences:
                    sentence_lo = 0
                conn.execute("UPDATE documents SET chunk_lo=?, sentence_lo=? WHERE id=?",
                             (chunk_lo, sentence_lo, doc_row))
                conn.executemany("UPDATE terms SET units = units + ? WHERE id = ?",
                                 zip(unit_counts, unit_ids))
                self._add_units(conn, prepared.n_units)
                conn.execute("INSERT INTO changes(op, doc_id, chunk_lo, chunk_hi) VALUES ('add', ?, ?, ?)",
                             (doc.doc_id, chunk_lo, chunk_lo + n_chunks - 1))
                crash_test_hook("upsert")
            except BaseException:
                self._term_ids = {}  # ids inserted by the rolled-back transaction do not exist
                raise
        self.refresh()
        crash_test_hook("committed")

    @staticmethod
    def _next_id(conn: sqlite3.Connection, table: str) -> int:
        """The id AUTOINCREMENT would give the next row of ``table`` (ids are never reused)."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return int(row[0]) + 1 if row else 1

    def _add_units(self, conn: sqlite3.Connection, delta: int) -> None:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'n_units'", (delta,))

    def _delete_locked(self, conn: sqlite3.Connection, doc_id: str) -> bool:
        row = conn.execute("SELECT id, chunk_lo, n_chunks, sentence_lo, n_sentences, n_units, unit_terms "
                           "FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return False
        doc_row, chunk_lo, n_chunks, sentence_lo, n_sentences, n_units, unit_terms = row
        # By id range (a document's rows are consecutive): no index on ``doc`` is needed.
        conn.execute("DELETE FROM chunks WHERE id BETWEEN ? AND ?", (chunk_lo, chunk_lo + n_chunks - 1))
        conn.execute("DELETE FROM sentences WHERE id BETWEEN ? AND ?", (sentence_lo, sentence_lo + n_sentences - 1))
        ids, counts = _unpack_terms(unit_terms)
        conn.executemany("UPDATE terms SET units = units - ? WHERE id = ?", zip(counts.tolist(), ids.tolist()))
        self._add_units(conn, -int(n_units))
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_row,))
        conn.execute("INSERT INTO changes(op, doc_id, chunk_lo, chunk_hi) VALUES ('remove', ?, ?, ?)",
                     (doc_id, chunk_lo, chunk_lo + n_chunks - 1))
        return True

    def delete(self, doc_id: str) -> bool:
        with self._writer.held(), self._transaction() as conn:
            removed = self._delete_locked(conn, doc_id)
            crash_test_hook("delete")
        self.refresh()
        crash_test_hook("removed")
        return removed

    def touch(self, doc_id: str, size: int, mtime_ns: int) -> None:
        """Record a new size and modification time for an unchanged file (same content)."""
        with self._transaction() as conn:
            conn.execute("UPDATE documents SET size=?, mtime_ns=? WHERE doc_id=?", (size, mtime_ns, doc_id))

    # --- documents ----------------------------------------------------------------------------

    def document(self, doc_id: str) -> Document | None:
        with self._lock:
            if doc_id in self._docs:
                self._docs.move_to_end(doc_id)
                return self._docs[doc_id]
        row = self._conn().execute("SELECT doc_id, source, title, date, text, text_crc, format, pages "
                                   "FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        doc = None
        if row is not None:
            if zlib.crc32(row[4].encode("utf-8", "surrogatepass")) != row[5]:
                raise CorruptIndexError(f"the stored text of {doc_id} fails its checksum",
                                        hint="re-add the document (`rag add --replace PATH`)")
            doc = Document(doc_id=row[0], path=row[1], title=row[2], date=row[3], text=row[4],
                           format=row[6], pages=tuple(json.loads(row[7])))
        with self._lock:
            self._docs[doc_id] = doc
            while len(self._docs) > DOCUMENT_CACHE:
                self._docs.popitem(last=False)
        return doc

    _INFO = ("SELECT doc_id, title, date, format, source, sha256, added, n_chunks, length(text), pages,"
             " root, size, mtime_ns FROM documents")

    @staticmethod
    def _info(row) -> DocumentInfo:
        return DocumentInfo(doc_id=row[0], title=row[1], date=row[2], format=row[3], source=row[4],
                            sha256=row[5], added=row[6], chunks=row[7], chars=row[8],
                            pages=len(json.loads(row[9])), root=row[10], size=row[11], mtime_ns=row[12])

    def document_info(self, doc_id: str) -> DocumentInfo | None:
        row = self._conn().execute(self._INFO + " WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else self._info(row)

    def list_documents(self) -> list[DocumentInfo]:
        return [self._info(r) for r in self._conn().execute(self._INFO + " ORDER BY doc_id")]

    # --- term statistics (ArchiveView) --------------------------------------------------------

    def idf(self, token: str) -> float:
        row = self._conn().execute("SELECT units FROM terms WHERE term = ?", (token,)).fetchone()
        return idf_from_counts(int(self.meta.get("n_units", 0)), int(row[0]) if row else 0)

    def mentions(self, term: str) -> bool:
        row = self._conn().execute("SELECT units FROM terms WHERE term = ?", (term,)).fetchone()
        return bool(row and row[0] > 0)

    # --- chunks -------------------------------------------------------------------------------

    def _chunk_map(self) -> "ChunkMap":
        with self._lock:
            if self._map is None:
                rows = self._conn().execute("SELECT doc_id, chunk_lo, n_chunks, sentence_lo FROM documents "
                                            "ORDER BY chunk_lo").fetchall()
                self._map = ChunkMap(rows)
            return self._map

    def _chunk_rows(self, chunk_ids: Sequence[str]) -> dict[int, tuple[str, int, int]]:
        """chunk key -> (doc_id, ordinal, the document's first sentence id) for known ids."""
        return self._chunk_map().keys_of(chunk_ids)

    def fetch_chunks(self, chunk_ids: Sequence[str], with_sentences: bool = False) -> dict[str, StoredChunk]:
        keys = self._chunk_rows(chunk_ids)
        if not keys:
            return {}
        conn = self._conn()
        rows = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], keys[r[0]][2], r[7], r[8]) for r in conn.execute(
            f"SELECT id, start, end, clean, context, sentence_lo, sentence_hi, "
            f"{'sentence_vectors, sentence_vectors_crc' if with_sentences else 'NULL, NULL'} "
            f"FROM chunks WHERE id IN ({','.join('?' * len(keys))})", list(keys))]
        sentence_rows: dict[int, tuple] = {}
        if with_sentences:
            wanted = sorted({base + k for r in rows for base in (r[7],) for k in range(r[5], r[6])})
            for start in range(0, len(wanted), 900):
                part = wanted[start:start + 900]
                for srow in conn.execute(
                        f"SELECT id, start, end, clean, paragraph, heading, section "
                        f"FROM sentences WHERE id IN ({','.join('?' * len(part))})", part):
                    sentence_rows[srow[0]] = srow
        dim = int(self.meta.get("dim", 0) or 0)
        out: dict[str, StoredChunk] = {}
        for key, start, end, clean, context, s_lo, s_hi, base, blob, crc in rows:
            doc_id, ordinal, _ = keys[key]
            doc = self.document(doc_id)
            if doc is None:
                continue
            chunk_id = f"{doc_id}#{ordinal}"
            sentences = []
            if with_sentences:
                _check(blob, crc, f"the sentences of {chunk_id}")
                matrix = _decode([blob], dim * (s_hi - s_lo)).reshape(-1, dim)
                for offset, sid in enumerate(range(base + s_lo, base + s_hi)):
                    srow = sentence_rows.get(sid)
                    if srow is None:
                        continue
                    _, s_start, s_end, s_clean, paragraph, heading, section = srow
                    sentences.append(StoredSentence(
                        span=Span(doc_id, s_start, s_end, doc.text[s_start:s_end], s_clean),
                        vector=matrix[offset], paragraph=paragraph, heading=bool(heading), section=section,
                        sentence_index=sid))
            out[chunk_id] = StoredChunk(
                chunk=Chunk(chunk_id=chunk_id, doc_id=doc_id, start=start, end=end, text=doc.text[start:end],
                            clean=clean, title=doc.title, context=context),
                page=doc.page_of(start), sentences=tuple(sentences))
        return out

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Chunk vector float32 (dim,) and its sentences' vectors float32 (m, dim) per chunk id
        (the dense score's best-sentence part, without reading any text)."""
        keys = self._chunk_rows(chunk_ids)
        if not keys:
            return {}
        rows = self._conn().execute(
            f"SELECT id, vector, vector_crc, sentence_vectors, sentence_vectors_crc FROM chunks "
            f"WHERE id IN ({','.join('?' * len(keys))})", list(keys)).fetchall()
        dim = int(self.meta.get("dim", 0) or 0)
        for key, blob, crc, members, members_crc in rows:
            _check(blob, crc, f"chunk key {key}")
            _check(members, members_crc, f"the sentences of chunk key {key}")
        chunk_matrix = _decode([r[1] for r in rows], dim)  # one conversion for all rows
        sentence_matrix = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float16).reshape(-1, dim)
        sentence_matrix = sentence_matrix.astype(np.float32)
        out = {}
        at = 0
        for i, (key, _, _, members, _) in enumerate(rows):
            doc_id, ordinal, _ = keys[key]
            m = len(members) // (2 * dim) if dim else 0
            out[f"{doc_id}#{ordinal}"] = (chunk_matrix[i], sentence_matrix[at:at + m])
            at += m
        return out

    # --- search caches ------------------------------------------------------------------------

    def dense_search(self, query_vector: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        with self._lock:
            self._ensure_caches()
            pairs = self._dense.search(query_vector, top_k)
        names = self._chunk_map()
        return [(name, s) for k, s in pairs for name in (names.id_of(k),) if name is not None]

    def lexical_search(self, tokens: Sequence[str], top_k: int) -> list[tuple[str, float]]:
        if not tokens:
            return []
        unique = list(dict.fromkeys(tokens))
        ids = dict(self._conn().execute(
            f"SELECT term, id FROM terms WHERE term IN ({','.join('?' * len(unique))})", unique).fetchall())
        with self._lock:
            self._ensure_caches()
            try:
                pairs = self._lexical.search([ids[t] for t in tokens if t in ids], top_k)
            except ValueError as err:  # postings failed their checksum on first use
                self.notify(f"rebuilding the search caches from the store ({err}) ...")
                self._build_caches()
                self._save_caches()
                pairs = self._lexical.search([ids[t] for t in tokens if t in ids], top_k)
        names = self._chunk_map()
        return [(name, s) for k, s in pairs for name in (names.id_of(k),) if name is not None]

    def warm_caches(self) -> None:
        """Load (or rebuild) the search caches now rather than on the first search."""
        with self._lock:
            self._ensure_caches()

    def cache_stats(self) -> dict[str, Any]:
        with self._lock:
            self._ensure_caches()
            return {"dense_kind": self._dense.kind, "dense_vectors": self._dense.ntotal,
                    "dense_nprobe": int(getattr(self._dense.index, "nprobe", 0)),
                    "dense_calibration": self._calibration,
                    "lexical_chunks": self._lexical.n_live, "lexical_postings": self._lexical.n_postings,
                    "generation": self._cache_generation}

    def _ensure_caches(self) -> None:
        if self._dense is not None:
            return
        dim = int(self.meta.get("dim", 0) or 0)
        reason = None
        try:
            folder, manifest = self._snapshots.load(lazy=frozenset({"lex_slots.npy", "lex_tf.npy"}))
            if manifest.get("store_uuid") != self.meta.get("store_uuid") or manifest.get("format") != CACHE_FORMAT \
                    or manifest.get("dim") != dim or int(manifest.get("generation", -1)) > self.generation():
                raise ValueError("it belongs to another store or version")
            dense = DenseIndex.read(folder / "dense.faiss", manifest["dense_kind"], dim)
            lexical = LexicalIndex.from_arrays({
                name: load_npy(folder / f"lex_{name}.npy", mmap=name in ("slots", "tf"))
                for name in ("slot_ids", "slot_len", "indptr", "slots", "tf", "term_crc", "tail_terms", "tail_start",
                             "tail_min_len", "tail_max_tf")})
            if dense.ntotal != lexical.n_live:
                raise ValueError(f"{dense.ntotal} vectors for {lexical.n_live} chunks")
            self._dense, self._lexical = dense, lexical
            self._cache_generation = int(manifest["generation"])
            self._trained = int(manifest.get("dense_trained", dense.ntotal))
            self._calibration = manifest.get("dense_calibration") or {}
            self._snapshots.cleanup()  # snapshots a killed save left unpublished
        except FileNotFoundError:
            reason = "no cache yet"
        except (ValueError, KeyError, TypeError) as err:
            reason = str(err)
        if reason is not None:
            if self.count_documents():
                self.notify(f"building the search caches from the store ({reason}) ...")
            self._build_caches()
            self._save_caches()
            return
        self._replay()

    def _build_caches(self, kind: str | None = None) -> None:
        dim = int(self.meta.get("dim", 0) or 384)
        conn = self._conn()
        conn.execute("BEGIN")  # one read snapshot: rows and generation agree
        try:
            generation = self.generation()
            n = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
            keys = np.zeros(n, dtype=np.int64)
            vectors = np.zeros((n, dim), dtype=np.float32)
            rows_for_lexical = []
            for i, (key, blob, crc, terms) in enumerate(
                    conn.execute("SELECT id, vector, vector_crc, terms FROM chunks ORDER BY id")):
                keys[i] = key
                vectors[i] = _vector(blob, crc, f"chunk key {key}")
                term_ids, counts = _unpack_terms(terms)
                rows_for_lexical.append((key, term_ids, counts))
        finally:
            conn.execute("COMMIT")
        self._lexical = LexicalIndex.build(rows_for_lexical)
        del rows_for_lexical
        self._dense = DenseIndex.build(dim, keys, vectors, kind=kind)
        self._calibration = self._dense.calibrate(keys, vectors, self._calibration_queries(keys)) \
            if self._dense.kind == "ivf" else {}
        self._trained = n
        self._cache_generation = generation
        self._replayed_chunks = 0

    def _calibration_queries(self, keys: np.ndarray) -> np.ndarray:
        """Held-out queries for :meth:`DenseIndex.calibrate`: one sentence vector from each of
        :data:`CALIBRATION_QUERIES` chunks drawn at random (sentences are not in the chunk index, and
        a sentence is the closest thing to a question the store holds)."""
        dim = int(self.meta.get("dim", 0) or 0)
        rng = np.random.default_rng(0)
        sample = rng.choice(keys, size=min(len(keys), CALIBRATION_QUERIES), replace=False).tolist()
        out = []
        for start in range(0, len(sample), 500):
            part = sample[start:start + 500]
            for key, blob, crc in self._conn().execute(
                    f"SELECT id, sentence_vectors, sentence_vectors_crc FROM chunks WHERE id IN "
                    f"({','.join('?' * len(part))})", part):
                if blob and dim:
                    _check(blob, crc, f"the sentences of chunk key {key}")
                    members = _decode([blob], len(blob) // 2).reshape(-1, dim)
                    out.append(members[rng.integers(len(members))])
        return np.stack(out) if out else np.zeros((0, dim), np.float32)

    def _save_caches(self) -> None:
        writers = {"dense.faiss": self._dense.write}
        writers.update({f"lex_{k}.npy": save_npy(v) for k, v in self._lexical.arrays().items()})
        facts = {"store_uuid": self.meta.get("store_uuid"), "format": CACHE_FORMAT, "dim": self._dense.dim,
                 "generation": self._cache_generation, "dense_kind": self._dense.kind,
                 "dense_trained": self._trained, "chunks": self._dense.ntotal, "saved": _now(),
                 "dense_calibration": self._calibration}
        try:
            self._snapshots.save(writers, facts)
            self._replayed_chunks = 0
        except OSError as err:
            self.notify(f"could not save the search caches ({err.strerror or err}); they will be rebuilt next time")

    def _replay(self) -> None:
        """Apply the change log since the caches' generation."""
        conn = self._conn()
        changes = conn.execute("SELECT generation, op, chunk_lo, chunk_hi FROM changes WHERE generation > ? "
                               "ORDER BY generation", (self._cache_generation,)).fetchall()
        if not changes:
            return
        touched = 0
        for generation, op, lo, hi in changes:
            if hi < lo:
                pass
            elif op == "remove":
                self._dense.remove_range(lo, hi)
                self._lexical.remove_range(lo, hi)
            else:
                rows = conn.execute("SELECT id, vector, vector_crc, terms FROM chunks WHERE id BETWEEN ? AND ? "
                                    "ORDER BY id", (lo, hi)).fetchall()
                if rows:
                    keys = np.asarray([r[0] for r in rows], dtype=np.int64)
                    self._dense.add(keys, np.stack([_vector(r[1], r[2], f"chunk key {r[0]}") for r in rows]))
                    for key, _, _, terms in rows:
                        term_ids, counts = _unpack_terms(terms)
                        self._lexical.add(key, term_ids, counts)
            touched += max(0, hi - lo + 1)
            self._cache_generation = generation
        self._replayed_chunks += touched
        if self._replayed_chunks >= max(SAVE_AFTER_CHUNKS, 0.1 * self._dense.ntotal):
            if self._dense.kind == "flat" and self._dense.ntotal > FLAT_MAX \
                    or self._dense.kind == "ivf" and self._dense.ntotal > 4 * self._trained:
                self._build_caches()  # outgrew its layout: exact -> IVF, or retrain the IVF cells
            else:
                self._lexical = self._lexical.compacted()
            self._save_caches()

    def rebuild_caches(self, kind: str | None = None) -> None:
        """Rebuild both caches from the store (no model needed) and save them."""
        with self._lock:
            self._build_caches(kind)
            self._save_caches()

    # --- housekeeping -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
            self._local = threading.local()

    def integrity_problems(self) -> list[str]:
        """Cross-checks of the tables (the crash tests run them after every kill): every
        document's chunk and sentence rows are complete and consecutive, term unit counts add
        up. Reads every row: meant for tests and diagnosis, not for large stores."""
        conn = self._conn()
        problems = []
        for doc_row, doc_id, chunk_lo, n_chunks, sentence_lo, n_sentences in conn.execute(
                "SELECT id, doc_id, chunk_lo, n_chunks, sentence_lo, n_sentences FROM documents"):
            ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE doc=? ORDER BY id", (doc_row,))]
            if ids != list(range(chunk_lo, chunk_lo + n_chunks)):
                problems.append(f"{doc_id}: chunk rows {ids[:3]}... do not match {chunk_lo}+{n_chunks}")
            ids = [r[0] for r in conn.execute("SELECT id FROM sentences WHERE doc=? ORDER BY id", (doc_row,))]
            if ids != list(range(sentence_lo, sentence_lo + n_sentences)):
                problems.append(f"{doc_id}: sentence rows do not match {sentence_lo}+{n_sentences}")
        orphans = conn.execute("SELECT count(*) FROM chunks WHERE doc NOT IN (SELECT id FROM documents)").fetchone()[0]
        orphans += conn.execute("SELECT count(*) FROM sentences WHERE doc NOT IN (SELECT id FROM documents)").fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunk or sentence rows without a document")
        units = conn.execute("SELECT coalesce(sum(n_units), 0) FROM documents").fetchone()[0]
        if int(self._read_meta().get("n_units", 0)) != units:
            problems.append("the unit total does not match the documents")
        total: dict[int, int] = {}
        for (blob,) in conn.execute("SELECT unit_terms FROM documents"):
            ids, counts = _unpack_terms(blob)
            for t, c in zip(ids.tolist(), counts.tolist()):
                total[t] = total.get(t, 0) + c
        for term_id, units in conn.execute("SELECT id, units FROM terms"):
            if total.get(term_id, 0) != units:
                problems.append(f"term {term_id}: {units} units stored, {total.get(term_id, 0)} in the documents")
                break
        return problems


class ChunkMap:
    """``chunk_id`` <-> chunk key in memory: a document's chunk keys are ``chunk_lo + ordinal``.

    Args:
        rows: ``(doc_id, chunk_lo, n_chunks, sentence_lo)`` per document, by ``chunk_lo``.
    """

    def __init__(self, rows: Sequence[tuple[str, int, int, int]]):
        self._by_doc = {doc_id: (lo, n, s_lo) for doc_id, lo, n, s_lo in rows}
        self._starts = [lo for _, lo, _, _ in rows]
        self._docs = [doc_id for doc_id, _, _, _ in rows]

    def keys_of(self, chunk_ids: Sequence[str]) -> dict[int, tuple[str, int, int]]:
        """key -> (doc_id, ordinal, first sentence id of the document) for the known ids."""
        out = {}
        for chunk_id in chunk_ids:
            doc_id, _, ordinal = chunk_id.rpartition("#")
            entry = self._by_doc.get(doc_id)
            if entry is not None and ordinal.isdigit() and int(ordinal) < entry[1]:
                out[entry[0] + int(ordinal)] = (doc_id, int(ordinal), entry[2])
        return out

    def id_of(self, key: int) -> str | None:
        """The ``chunk_id`` of a key, None when no stored document holds it."""
        i = bisect_right(self._starts, key) - 1
        if i < 0:
            return None
        doc_id = self._docs[i]
        lo, n, _ = self._by_doc.get(doc_id, (-1, 0, 0))
        return f"{doc_id}#{key - lo}" if lo == self._starts[i] and key < lo + n else None


def clean_stale_siblings(directory: Path) -> None:
    """Remove ``<name>.rebuild-<pid>`` / ``<name>.old-<pid>`` folders left by killed rebuilds."""
    parent = directory.parent
    if not parent.is_dir():
        return
    for path in parent.glob(f"{directory.name}.*-*"):
        kind, _, pid = path.name[len(directory.name) + 1:].partition("-")
        if kind in ("rebuild", "old") and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
