"""A synthetic archive that resembles a real one, and a fast fake embedder whose vectors cluster
by topic the way real sentence embeddings do. Used by ``eval/bench_store.py`` at 10^4-10^6 chunks.

**Text** (:class:`SyntheticArchive`): a generative model in the manner of LDA (Blei, Ng & Jordan,
JMLR 2003) whose parts come from the bundled seeds: every document has a main topic (topic
popularity is Zipfian) and sometimes a second one; each sentence takes its length from the
seeds' sentence lengths (jieba tokens) and fills each position with punctuation, one of the
seeds' common words or a content word in the seeds' proportions; a content word is a word of the
document's topics (the topic's own terms, built on characters reserved for that topic, or seed
content words the topic favours), a name (a global pool of person/place names with Zipfian
popularity: a few recur across the archive, most are rare, and a document repeats its own), a
number, or any seed content word by its seed frequency. Every document is distinct; the
vocabulary keeps growing with the archive (new names, numbers and topic terms), as a real one
does (Heaps' law), instead of being the seeds' ~3.8k words repeated.

**Vectors** (:class:`TopicEmbedder`): ``normalize(mean + s * normalize(a * C @ p + b * H @ h))``
where ``mean`` is the mean of the real model's vectors of the seeds' chunks, ``p`` the text's
topic mixture (read from the reserved topic characters it contains), ``C`` the topic centroids,
``h`` signed hashed character unigrams and bigrams of the text (feature hashing, Weinberger et
al., ICML 2009; they carry the words, names and numbers a text shares with its neighbours), and
``C``, ``H`` draw their directions from the real vectors' covariance (principal axes and
variances of the seeds' chunk and sentence vectors), so the fake vectors are as anisotropic as
the real ones. ``s``, ``a``, ``b`` are fitted by :func:`fit_embedder` so that, on a synthetic
archive of the seeds' size, the mean pairwise cosine, the nearest-neighbour cosines and the
question-to-best-chunk cosines match the real model on the seeds (``eval/bench_store.py
--realism`` prints the comparison). The reference statistics of the real model are computed once
(about a minute) and cached under ``$RAG_HOME/bench/`` keyed by the seeds' and model's hashes.

:class:`LegacyArchive` is the first round's generator (seed sentences recombined with a varied
number and one invented word each); the benchmark can still use it (``--generator legacy``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIM = 384

#: Number of topics. A real regional archive of 10^6 chunks (a few hundred thousand articles)
#: covers a few thousand distinct subjects; 2,000 keeps each topic's share at 10^6 chunks in the
#: hundreds-to-tens-of-thousands of chunks.
TOPICS = 2000
#: Characters reserved per topic for its own terms (never used by the seeds).
TOPIC_CHARS = 3
#: Own terms per topic and seed content words it favours.
TOPIC_TERMS, TOPIC_SEED_WORDS = 60, 120
#: Names in the global pool (Zipf exponent NAME_ZIPF over it).
NAMES, NAME_ZIPF = 1 << 21, 1.05
#: Share of content positions per source: topic terms, topic's seed words, names, numbers,
#: any seed content word. Set so the synthetic text's rank-frequency and postings-length
#: distributions at the seeds' size match the seeds' (``--realism``).
CONTENT_MIX = {"topic_term": 0.22, "topic_word": 0.38, "name": 0.10, "number": 0.05, "seed_word": 0.25}
#: Document length in characters: log-normal, median and sigma (news articles and report
#: sections; the seeds' files are newspaper pages of several articles, 4.8k-9.0k characters).
DOC_CHARS_MEDIAN, DOC_CHARS_SIGMA = 3000, 0.7
#: Common words: the seeds' most frequent words (function words and the archive's staples).
COMMON_WORDS = 120
#: Question endings of the gold questions' kind.
QUESTION_ENDS = ("是什么？", "有哪些？", "达到多少？", "提出了哪些建议？", "怎么做？", "如何推进？", "有什么要求？",
                 "情况如何？", "是多少？", "做了哪些工作？")


def _is_word(token: str) -> bool:
    import unicodedata

    return any(unicodedata.category(ch)[0] in "LN" for ch in token)


@lru_cache(maxsize=1)
def seed_statistics() -> dict:
    """Token statistics of the bundled seeds (jieba precise mode over each sentence's clean text).

    Returns:
        dict with ``punct`` / ``common`` / ``content`` (token list, counts), ``shares`` of the three
        kinds among non-final tokens, ``lengths`` (tokens per sentence), ``paragraph_sentences``,
        ``chars`` (set of characters the seeds use), ``name_chars``.
    """
    from rag.ingest.prepare import load_documents
    from rag.text import document_spans
    from rag.tokenize import jieba_tokenizer

    jt = jieba_tokenizer()
    counts: Counter = Counter()
    lengths, paragraph_sentences = [], []
    chars: set[str] = set()
    for doc in load_documents(ROOT / "seeds"):
        layout = document_spans(doc.doc_id, doc.text)
        per_paragraph: Counter = Counter()
        for span, paragraph in zip(layout.sentences, layout.paragraph_ids):
            tokens = jt.lcut(span.clean)
            if len(tokens) > 1 and tokens[-1] in "。！？":
                tokens = tokens[:-1]
            lengths.append(max(1, len(tokens)))
            counts.update(tokens)
            chars.update(span.clean)
            per_paragraph[paragraph] += 1
        paragraph_sentences.extend(per_paragraph.values())
    words = [(t, c) for t, c in counts.most_common() if _is_word(t)]
    punct = [(t, c) for t, c in counts.most_common() if not _is_word(t) and t.strip()]
    common, content = words[:COMMON_WORDS], words[COMMON_WORDS:]
    n_punct, n_common, n_content = (sum(c for _, c in x) for x in (punct, common, content))
    total = n_punct + n_common + n_content
    return {"punct": punct, "common": common, "content": content,
            "shares": (n_punct / total, n_common / total, n_content / total),
            "lengths": lengths, "paragraph_sentences": paragraph_sentences, "chars": chars}


def _probs(pairs, power: float = 1.0) -> np.ndarray:
    weights = np.asarray([c for _, c in pairs], dtype=np.float64) ** power
    return weights / weights.sum()


class SyntheticArchive:
    """Deterministic synthetic documents and questions (see the module docstring).

    Args:
        seed: Makes a different archive.
    """

    name = "topics"

    def __init__(self, seed: int = 0):
        stats = seed_statistics()
        self.seed = seed
        self.stats = stats
        rng = np.random.default_rng([seed, 1])
        self.punct = [t for t, _ in stats["punct"]]
        self.punct_p = _probs(stats["punct"])
        self.common = [t for t, _ in stats["common"]]
        self.common_p = _probs(stats["common"])
        self.content = [t for t, _ in stats["content"]]
        self.content_p = _probs(stats["content"])
        self.shares = np.asarray(stats["shares"])
        self.lengths = np.asarray(stats["lengths"])
        self.paragraphs = np.asarray(stats["paragraph_sentences"])
        # Characters the seeds never use: reserved, TOPIC_CHARS per topic.
        unused = [chr(c) for c in range(0x4E00, 0x9FA6) if chr(c) not in stats["chars"]]
        rng.shuffle(unused)
        self.topic_chars = [unused[t * TOPIC_CHARS:(t + 1) * TOPIC_CHARS] for t in range(TOPICS)]
        self.char_topic = {ch: t for t, cs in enumerate(self.topic_chars) for ch in cs}
        seed_chars = sorted(ch for ch in stats["chars"] if "\u4e00" <= ch <= "\u9fa5")
        self.seed_chars = seed_chars
        char_counts = Counter(ch for t, c in stats["content"] for ch in t for _ in range(c))
        self.seed_char_p = np.asarray([char_counts.get(ch, 0) + 1 for ch in seed_chars], dtype=np.float64)
        self.seed_char_p /= self.seed_char_p.sum()
        self.seed_chars_arr = np.asarray(seed_chars, dtype=object)
        topic_p = 1.0 / np.arange(1, TOPICS + 1) ** 0.8  # Zipfian topic popularity
        self.topic_cdf = np.cumsum(topic_p) / topic_p.sum()
        self.kinds = list(CONTENT_MIX)
        self.kind_cdf = np.cumsum([CONTENT_MIX[k] for k in self.kinds])
        self.kind_cdf /= self.kind_cdf[-1]
        self.share_cdf = np.cumsum(self.shares)
        self.punct_arr, self.punct_cdf = np.asarray(self.punct, dtype=object), np.cumsum(self.punct_p)
        self.common_arr, self.common_cdf = np.asarray(self.common, dtype=object), np.cumsum(self.common_p)
        self.content_arr, self.content_cdf = np.asarray(self.content, dtype=object), np.cumsum(self.content_p)
        self.units = np.asarray(["年", "万元", "个", "家", "%", "人", "项"], dtype=object)

    # --- vocabulary pieces ----------------------------------------------------------------------

    @lru_cache(maxsize=4096)
    def topic(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Topic ``t``: its own terms and their cumulative Zipf weights, and the seed content
        words it favours with theirs."""
        rng = np.random.default_rng([self.seed, 2, t])
        own = []
        for k in range(TOPIC_TERMS):
            n = 1 + int(rng.integers(1, 3))  # 2-3 characters: one reserved, the rest seed characters
            pieces = [self.topic_chars[t][k % TOPIC_CHARS]] + list(rng.choice(self.seed_chars, n - 1,
                                                                              p=self.seed_char_p))
            rng.shuffle(pieces)
            own.append("".join(pieces))
        own_cdf = np.cumsum(1.0 / np.arange(1, TOPIC_TERMS + 1))
        idx = rng.choice(len(self.content), TOPIC_SEED_WORDS, replace=False, p=self.content_p)
        words_cdf = np.cumsum(1.0 / np.arange(1, TOPIC_SEED_WORDS + 1) ** 0.9)
        return (np.asarray(own, dtype=object), own_cdf / own_cdf[-1],
                np.asarray([self.content[i] for i in idx], dtype=object), words_cdf / words_cdf[-1])

    def names(self, ids: np.ndarray) -> list[str]:
        """Names of the global pool: 2-3 seed characters each, a hash of the id."""
        ids = np.asarray(ids, dtype=np.uint64)
        n = np.uint64(len(self.seed_chars))
        h1 = (ids * np.uint64(0x9E3779B97F4A7C15) + np.uint64(self.seed)) >> np.uint64(20)
        h2 = (h1 * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(17)
        h3 = (h2 * np.uint64(0x94D049BB133111EB)) >> np.uint64(23)
        chars = self.seed_chars_arr
        first, second, third = chars[h1 % n], chars[h2 % n], chars[h3 % n]
        return [a + b + (c if k % 3 == 0 else "") for a, b, c, k in zip(first, second, third, ids.tolist())]

    def _name_ids(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # Zipf(NAME_ZIPF) over NAMES ids by inverse transform of the continuous approximation.
        u = rng.random(n)
        s = NAME_ZIPF
        x = (1 - u * (1 - NAMES ** (1 - s))) ** (1 / (1 - s))
        return np.minimum(x.astype(np.int64), NAMES - 1)

    # --- documents ----------------------------------------------------------------------------

    def plan(self, index: int) -> dict:
        """The document's topics, names and length (deterministic in ``index``)."""
        rng = np.random.default_rng([self.seed, 3, index])
        main = int(np.searchsorted(self.topic_cdf, rng.random()))
        topics, weights = [main], [1.0]
        if rng.random() < 0.5:
            topics.append(int(np.searchsorted(self.topic_cdf, rng.random())))
            weights = [0.75, 0.25]
        names = self._name_ids(rng, 2 + int(rng.poisson(4)))
        chars = int(np.clip(rng.lognormal(math.log(DOC_CHARS_MEDIAN), DOC_CHARS_SIGMA), 300, 40_000))
        return {"topics": topics, "weights": weights, "names": names, "chars": chars}

    def _content(self, rng, plan, n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        kinds = np.searchsorted(self.kind_cdf, rng.random(n))
        which = np.searchsorted(np.cumsum(plan["weights"]) / sum(plan["weights"]), rng.random(n))
        u = rng.random(n)
        for k, name in enumerate(self.kinds):
            at = np.flatnonzero(kinds == k)
            if not len(at):
                continue
            if name in ("topic_term", "topic_word"):
                for j, t in enumerate(plan["topics"]):
                    sel = at[which[at] == j]
                    if len(sel):
                        own, own_cdf, words, words_cdf = self.topic(t)
                        vocab, cdf = (own, own_cdf) if name == "topic_term" else (words, words_cdf)
                        out[sel] = vocab[np.minimum(np.searchsorted(cdf, u[sel]), len(vocab) - 1)]
            elif name == "name":
                # A document mostly repeats its own names; sometimes it mentions one from the pool.
                own = plan["names"][rng.integers(len(plan["names"]), size=len(at))]
                pool = self._name_ids(rng, len(at))
                out[at] = self.names(np.where(u[at] < 0.8, own, pool))
            elif name == "number":
                numbers = rng.integers(1, 3000, size=len(at))
                units = self.units[rng.integers(len(self.units), size=len(at))]
                out[at] = [f"{a}{b}" for a, b in zip(numbers.tolist(), units)]
            else:
                out[at] = self.content_arr[np.minimum(np.searchsorted(self.content_cdf, u[at]),
                                                      len(self.content_arr) - 1)]
        return out

    def document(self, index: int) -> str:
        """The stored text of document ``index``: a title line, then paragraphs of sentences."""
        plan = self.plan(index)
        rng = np.random.default_rng([self.seed, 4, index])
        n = int(plan["chars"] / 2.0) + 20  # seed tokens average ~2 characters
        kinds = np.searchsorted(self.share_cdf, rng.random(n))
        tokens = np.empty(n, dtype=object)
        at = np.flatnonzero(kinds == 0)
        tokens[at] = self.punct_arr[np.minimum(np.searchsorted(self.punct_cdf, rng.random(len(at))),
                                               len(self.punct_arr) - 1)]
        at = np.flatnonzero(kinds == 1)
        tokens[at] = self.common_arr[np.minimum(np.searchsorted(self.common_cdf, rng.random(len(at))),
                                                len(self.common_arr) - 1)]
        at = np.flatnonzero(kinds == 2)
        tokens[at] = self._content(rng, plan, len(at))
        is_word = kinds != 0
        lengths = self.lengths[rng.integers(len(self.lengths), size=n)]
        ends = rng.random(n)
        paragraph_sizes = self.paragraphs[rng.integers(len(self.paragraphs), size=n)]
        title = "".join(self._content(rng, plan, int(rng.integers(3, 6))))
        paragraphs, sentences, pos, k, p = [], [], 0, 0, 0
        while pos < n:
            lo, hi = pos, min(n, pos + int(lengths[k]))
            pos = hi
            while lo < hi and not is_word[lo]:
                lo += 1
            while hi > lo and not is_word[hi - 1]:
                hi -= 1
            if hi > lo:
                words = [tokens[i] for i in range(lo, hi) if is_word[i] or is_word[i - 1]]
                sentences.append("".join(words) + ("。" if ends[k] < 0.97 else "！" if ends[k] < 0.985 else "？"))
            k += 1
            if len(sentences) >= max(1, int(paragraph_sizes[p])):
                paragraphs.append("".join(sentences))
                sentences, p = [], p + 1
        if sentences:
            paragraphs.append("".join(sentences))
        return title + "\n\n" + "\n\n".join(paragraphs) + "\n"

    def question(self, rng: random.Random, n_docs: int) -> tuple[int, str]:
        """A question about a random document: a clause of one of its sentences (the words a
        user would type) plus a question ending. Returns ``(document index, question)``."""
        index = rng.randrange(n_docs)
        text = self.document(index)
        body = text.split("\n\n", 1)[-1]
        sentences = [s for s in body.replace("\n", "").split("。") if len(s) >= 8]
        sentence = rng.choice(sentences) if sentences else body[:30]
        clauses = [c for c in sentence.replace("；", "，").split("，") if len(c) >= 6] or [sentence]
        clause = rng.choice(clauses)
        start = rng.randrange(max(1, len(clause) - 16))
        return index, clause[start:start + rng.randint(8, 16)] + rng.choice(QUESTION_ENDS)

    def topic_of_chars(self) -> dict[str, int]:
        return self.char_topic


class LegacyArchive:
    """Round 1's generator: seed sentences recombined, numbers varied, one invented two-character
    word per sentence, ~21 chunks per document (kept for comparison: ``--generator legacy``)."""

    name = "legacy"

    def __init__(self, seed: int = 0):
        from rag.ingest.prepare import load_documents
        from rag.text import document_spans

        self.sentences = []
        for doc in load_documents(ROOT / "seeds"):
            for span in document_spans(doc.doc_id, doc.text).sentences:
                if 12 <= len(span.clean) <= 120 and span.clean[-1] in "。！？":
                    self.sentences.append(span.clean)
        self.cjk = [chr(c) for c in range(0x4E00, 0x9FA5)]

    def document(self, index: int) -> str:
        rng = random.Random(index)
        lines = [f"第{index}号综合报告"]
        for _ in range(rng.randint(14, 22)):
            paragraph = []
            for _ in range(rng.randint(4, 9)):
                s = rng.choice(self.sentences)
                s = "".join(str(rng.randint(0, 9)) if ch.isdigit() else ch for ch in s)
                cut = rng.randrange(len(s) - 1)
                paragraph.append(s[:cut] + rng.choice(self.cjk) + rng.choice(self.cjk) + s[cut:])
            lines.append("".join(paragraph))
        return "\n\n".join(lines) + "\n"

    def question(self, rng: random.Random, n_docs: int) -> tuple[int, str]:
        index = rng.randrange(n_docs)
        pieces = [p for p in self.document(index).split("。") if len(p) > 10]
        q = rng.choice(pieces)
        return index, q[:rng.randint(10, min(40, len(q)))]

    def topic_of_chars(self) -> dict[str, int]:
        return {}


def make_archive(name: str, seed: int = 0):
    """``"topics"`` (:class:`SyntheticArchive`, the default) or ``"legacy"`` (:class:`LegacyArchive`)."""
    if name == "legacy":
        return LegacyArchive(seed)
    if name == "topics":
        return SyntheticArchive(seed)
    raise ValueError(f"unknown generator {name!r}")


# --- the fake embedder ------------------------------------------------------------------------


def _cache_dir() -> Path:
    home = os.environ.get("RAG_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "liaoyuan-rag"
    return base / "bench"


def seeds_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def reference_vectors() -> dict[str, np.ndarray]:
    """The real model's vectors of the seeds (chunk retrieval texts, sentences) and of the dev gold
    questions, embedded once and cached (``$RAG_HOME/bench/seed_reference-<hash>.npz``)."""
    from rag.config import Settings

    settings = Settings.from_env()
    gold = ROOT / "eval" / "gold.jsonl"
    key = hashlib.sha256((seeds_hash() + settings.model + str(settings.chunk_size) + str(settings.chunk_overlap)
                          + hashlib.sha256(gold.read_bytes()).hexdigest()).encode()).hexdigest()[:16]
    path = _cache_dir() / f"seed_reference-{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    from rag.embedding import Embedder
    from rag.ingest.prepare import load_documents, prepare_document

    embedder = Embedder(settings)
    embedder.warm_up()
    chunks, sentences = [], []
    for doc in load_documents(ROOT / "seeds"):
        prepared = prepare_document(doc, "", settings.chunk_size, settings.chunk_overlap)
        chunks += [c.retrieval_text for c in prepared.chunks]
        sentences += [s.span.clean for s in prepared.sentences]
    questions = [json.loads(line)["question"] for line in gold.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = {"chunks": np.asarray(embedder.embed_passages(chunks), np.float32),
           "sentences": np.asarray(embedder.embed_passages(sentences), np.float32),
           "questions": np.asarray(embedder.embed_queries(questions), np.float32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def two_nn_dimension(vectors: np.ndarray) -> float:
    """Local intrinsic dimension by the TwoNN estimator (Facco, d'Errico, Rodriguez & Laio,
    Scientific Reports 2017): ``n / sum(log(r2 / r1))`` over the distances to each point's first
    and second nearest neighbours. Real sentence embeddings have a low one, and it is what decides
    how well IVF/HNSW indexes work."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -2.0)
    top2 = -np.partition(-sims, 1, axis=1)[:, :2]  # the two largest cosines of each row
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * top2))
    r1, r2 = np.sort(dist, axis=1).T
    mu = r2[r1 > 1e-6] / r1[r1 > 1e-6]
    mu = mu[mu > 1.0]
    return float(len(mu) / np.log(mu).sum()) if len(mu) else float("nan")


def vector_statistics(chunks: np.ndarray, queries: np.ndarray | None = None,
                      sentences: np.ndarray | None = None) -> dict[str, float]:
    """Cosine statistics of L2-normalised vectors: mean pairwise cosine, quantiles of each
    chunk's nearest-other-chunk cosine, each query's best and 10th-best chunk cosine, the
    variance share of the first 50 principal components, and the TwoNN intrinsic dimension of
    the chunks (and of ``sentences`` when given)."""
    sims = chunks @ chunks.T
    n = len(chunks)
    off = sims[~np.eye(n, dtype=bool)]
    np.fill_diagonal(sims, -2)
    nn = sims.max(axis=1)
    centred = chunks - chunks.mean(axis=0)
    var = np.linalg.svd(centred, compute_uv=False) ** 2
    out = {"pairwise_mean": float(off.mean()), "pairwise_p05": float(np.percentile(off, 5)),
           "nn_p10": float(np.percentile(nn, 10)), "nn_p50": float(np.percentile(nn, 50)),
           "nn_p90": float(np.percentile(nn, 90)), "pca50_share": float(var[:50].sum() / var.sum()),
           "two_nn_dim_chunks": two_nn_dimension(chunks)}
    if sentences is not None and len(sentences):
        out["two_nn_dim_sentences"] = two_nn_dimension(sentences)
    if queries is not None and len(queries):
        q = np.sort(queries @ chunks.T, axis=1)[:, ::-1]
        out.update({"query_top1_p50": float(np.median(q[:, 0])), "query_top10_p50": float(np.median(q[:, 9])),
                    "query_gap_1_10_p50": float(np.median(q[:, 0] - q[:, 9]))})
    return out


#: Bump when the fake embedder or its fit changes (the cached fit is then redone).
FIT_VERSION = 2


class TopicEmbedder:
    """Fast fake embedder (see the module docstring): float32 (n, 384), rows L2-normalised.

    Args:
        archive: The :class:`SyntheticArchive` whose reserved topic characters it reads.
        params: ``{"s": ..., "a": ..., "b": ...}`` (default: :func:`fitted_params`).
        basis: ``{"mean": (384,), "axes": (384, 384), "scales": (384,)}`` of the real vectors
            (default: from :func:`reference_vectors`).
    """

    model_id = "bench-topic-384"
    dim = DIM
    path = None

    def __init__(self, archive, params: dict | None = None, basis: dict | None = None, seed: int = 0):
        basis = basis or real_basis()
        self.mean = basis["mean"].astype(np.float32)
        self.shape = (basis["axes"] * basis["scales"][:, None]).astype(np.float32)  # rows: scaled principal axes
        self.seed = seed
        rng = np.random.default_rng([seed, 9])
        self.centroids = _unit(rng.standard_normal((TOPICS, len(self.shape))).astype(np.float32) @ self.shape)
        self.hash_dim = 4096
        self.char_topic = np.full(0x10000, -1, dtype=np.int32)
        for ch, t in archive.topic_of_chars().items():
            self.char_topic[ord(ch)] = t
        self.params = params or fitted_params(archive)
        self.hash_proj = self.projection(int(self.params.get("rank", DIM)))

    def projection(self, rank: int) -> np.ndarray:
        """(hash_dim, 384) projection of the hashed n-grams through a ``rank``-dimensional
        subspace: a low rank gives nearby texts few directions to differ in (a low local
        intrinsic dimension, as real sentence embeddings have)."""
        rng = np.random.default_rng([self.seed, 10, rank])
        inner = rng.standard_normal((self.hash_dim, rank)).astype(np.float32) / np.sqrt(self.hash_dim)
        outer = rng.standard_normal((rank, len(self.shape))).astype(np.float32) @ self.shape
        return inner @ outer

    def warm_up(self) -> None:
        pass

    def _codes(self, text: str) -> np.ndarray:
        cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return cp[((cp >= 0x3400) & (cp < 0x10000)) | ((cp >= 0x30) & (cp < 0x7B))]  # CJK, digits, letters

    def _parts(self, texts) -> tuple:
        """Sparse (len(texts), TOPICS) topic-character counts and (len(texts), hash_dim) signed
        hashed character uni/bigram counts (scipy CSR)."""
        from scipy.sparse import csr_matrix

        rows_t, cols_t, rows_h, cols_h, signs = [], [], [], [], []
        for i, text in enumerate(texts):
            cp = self._codes(text)
            topics = self.char_topic[cp]
            topics = topics[topics >= 0]
            rows_t.append(np.full(len(topics), i, np.int64))
            cols_t.append(topics.astype(np.int64))
            c = cp.astype(np.uint64)
            grams = np.concatenate([c, c[:-1] * np.uint64(1_000_003) + c[1:]]) if len(c) > 1 else c
            h = (grams * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(36)
            rows_h.append(np.full(len(h), i, np.int64))
            cols_h.append((h % np.uint64(self.hash_dim)).astype(np.int64))
            signs.append(np.where((h >> np.uint64(20)) & np.uint64(1), 1.0, -1.0).astype(np.float32))
        n = len(texts)
        cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
        rt, ct = cat(rows_t, np.int64), cat(cols_t, np.int64)
        mix = csr_matrix((np.ones(len(rt), np.float32), (rt, ct)), shape=(n, TOPICS))
        hashed = csr_matrix((cat(signs, np.float32), (cat(rows_h, np.int64), cat(cols_h, np.int64))),
                            shape=(n, self.hash_dim))
        return mix, hashed

    def embed_passages(self, texts, threads=None, show_progress=False) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, DIM), np.float32)
        return self.combine(*self._parts(list(texts)))

    embed_queries = embed_passages

    def combine(self, mix, hashed, params: dict | None = None, projection: np.ndarray | None = None) -> np.ndarray:
        """Vectors from sparse topic counts and hashed n-grams (see :meth:`_parts`)."""
        p = params or self.params
        topical = _unit(np.asarray(mix @ self.centroids))
        lexical = _unit(np.asarray(hashed @ (self.hash_proj if projection is None else projection)))
        deviation = _unit(p["a"] * topical + p["b"] * lexical)
        return _unit(self.mean[None, :] + p["s"] * deviation)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1)).astype(np.float32)


@lru_cache(maxsize=1)
def real_basis() -> dict:
    """Mean, principal axes and per-axis standard deviations of the real model's seed vectors
    (chunks and sentences together), normalised so the deviations have unit total variance."""
    ref = reference_vectors()
    vectors = np.concatenate([ref["chunks"], ref["sentences"]])
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    _, sv, axes = np.linalg.svd(centred, full_matrices=False)
    scales = sv / np.sqrt(len(vectors))
    scales = scales / np.sqrt((scales ** 2).sum())
    return {"mean": mean / np.linalg.norm(mean), "axes": axes, "scales": scales}


def seed_size_sample(archive, n_chunks: int, chunk_size: int = 400, chunk_overlap: int = 80):
    """Prepared documents of ``archive`` (from index 0) until ``n_chunks`` chunks."""
    from rag.ingest.prepare import make_document, prepare_document
    from rag.ingest.readers import StoredText

    out, total, index = [], 0, 0
    while total < n_chunks:
        doc = make_document(f"synthetic/{index:07d}", StoredText(archive.document(index), "txt"), "")
        prepared = prepare_document(doc, "", chunk_size, chunk_overlap)
        out.append(prepared)
        total += len(prepared.chunks)
        index += 1
    return out


def fitted_params(archive) -> dict:
    """``s``, ``a``, ``b`` of :class:`TopicEmbedder` fitted to the real seed statistics (cached
    with the hash of the seeds and reference vectors; see :func:`fit_embedder`)."""
    path = _cache_dir() / f"topic_embedder-{FIT_VERSION}-{seeds_hash()}-{archive.name}.json"
    if path.is_file():
        return json.loads(path.read_text())["params"]
    result = fit_embedder(archive)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result["params"]


def fit_embedder(archive) -> dict:
    """Grid search of ``s`` (spread around the mean), ``a``/``b`` (topic vs lexical share) and
    ``rank`` (of the lexical projection) so that on a synthetic archive of the seeds' size the
    fake vectors come closest to the real model's on the seeds in: mean pairwise cosine,
    nearest-neighbour cosine quantiles, question best/10th cosines (each weighted 1/0.01), and the
    TwoNN intrinsic dimension of chunks and sentences (relative error, weighted 1/0.1). (The
    variance share of 50 principal components is not matched: at the seeds' size the fake vectors
    span fewer directions than the real ones; ``--realism`` shows it.)"""
    ref = reference_vectors()
    target = vector_statistics(ref["chunks"], ref["questions"], ref["sentences"])
    embedder = TopicEmbedder(archive, params={"s": 1.0, "a": 1.0, "b": 1.0, "rank": DIM})
    sample = seed_size_sample(archive, len(ref["chunks"]))
    texts = [c.retrieval_text for p in sample for c in p.chunks]
    sentences = [s.span.clean for p in sample for s in p.sentences][:len(ref["sentences"])]
    qrng = random.Random(5)
    questions = [archive.question(qrng, len(sample))[1] for _ in range(len(ref["questions"]))]
    parts = {name: embedder._parts(x) for name, x in (("c", texts), ("s", sentences), ("q", questions))}
    cosines = ("pairwise_mean", "nn_p10", "nn_p50", "nn_p90", "query_top1_p50", "query_top10_p50")
    dims = ("two_nn_dim_chunks", "two_nn_dim_sentences")
    best = None
    for rank in (4, 8, 16, 32, 64, DIM):
        projection = embedder.projection(rank)
        for s in np.linspace(0.2, 1.2, 21):
            for a in (0.25, 0.5, 1.0, 2.0):  # a > 0: vectors cluster by topic (at the seeds' size,
                # where nearly every document has its own topic, the statistics barely see a)
                params = {"s": float(s), "a": float(a), "b": 1.0, "rank": rank}
                got = vector_statistics(*(embedder.combine(*parts[k], params, projection) for k in "cqs"))
                loss = sum(((got[k] - target[k]) / 0.01) ** 2 for k in cosines) \
                    + sum(((got[k] - target[k]) / target[k] / 0.1) ** 2 for k in dims)
                if best is None or loss < best[0]:
                    best = (loss, params, got)
    return {"params": best[1], "loss": best[0], "synthetic": best[2], "real": target,
            "seeds_sha256_16": seeds_hash(), "archive": archive.name}


def text_statistics(prepared_docs, questions: list[str]) -> dict[str, float]:
    """Term statistics over chunks (the BM25 view): vocabulary, Zipf exponent of the
    rank-frequency curve (least squares in log-log over ranks 10-1000), Heaps' exponent of the
    vocabulary's growth over the chunks in order (vocabulary ~ tokens^beta), share of terms in one
    chunk only, postings length (chunks per term) quantiles as a share of all chunks, tokens per
    chunk, and the postings length of the questions' tokens."""
    from rag.tokenize import tokenize

    tf: Counter = Counter()
    df: Counter = Counter()
    lengths, growth = [], []
    n = 0
    for p in prepared_docs:
        for c in p.chunks:
            tf.update(c.terms)
            df.update(c.terms.keys())
            lengths.append(sum(c.terms.values()))
            n += 1
            growth.append((sum(lengths), len(tf)))
    tokens, vocab = np.asarray(growth[len(growth) // 10:], dtype=np.float64).T
    heaps = np.polyfit(np.log(tokens), np.log(vocab), 1)[0]
    freqs = np.asarray(sorted(tf.values(), reverse=True), dtype=np.float64)
    ranks = np.arange(1, len(freqs) + 1)
    lo, hi = 10, min(1000, len(freqs))
    slope = np.polyfit(np.log(ranks[lo:hi]), np.log(freqs[lo:hi]), 1)[0] if hi > lo + 10 else float("nan")
    dfs = np.asarray(list(df.values()), dtype=np.float64)
    qdf = [df.get(t, 0) / n for q in questions for t in tokenize(q)]
    return {"chunks": n, "vocabulary": len(tf), "zipf_exponent": float(-slope), "heaps_beta": float(heaps),
            "tokens_per_chunk_p50": float(np.median(lengths)),
            "hapax_share": float((dfs == 1).mean()),
            "df_share_p50": float(np.median(dfs) / n), "df_share_p99": float(np.percentile(dfs, 99) / n),
            "df_share_max": float(dfs.max() / n),
            "top10_token_share": float(freqs[:10].sum() / freqs.sum()),
            "query_df_share_p50": float(np.median(qdf)) if qdf else float("nan"),
            "query_df_share_p90": float(np.percentile(qdf, 90)) if qdf else float("nan")}
