"""The extractive answerer: candidate features -> learned sentence scorer -> composition ->
calibrated answerability -> quotes with citations, or ``未找到相关内容。``.

One call of :meth:`Answerer.answer`:

1. **Question analysis** (:func:`rag.answer.question.analyse_question`): list or factoid, the
   topic tokens with IDF weights, named entities (and those the archive never mentions), stated
   years/numbers, what is asked for (slots: amount, count, rate, date, person, organisation,
   place, name, title, reason, ...) and the parts of a compound question.
2. **Candidate features** (:func:`rag.answer.features.sentence_features`): lexical coverage of
   the sentence, its neighbours and its section headings, dense cosine and its rank, chunk rank
   and score, slot support (a mention of the asked-for kind, and in the same clause as a topic
   word), stated constraints and entities found, heading/by-line/list-item/layout flags.
3. **Sentence scorer**: the fitted model's log-odds that a sentence holds the answer.
4. **Composition** (:mod:`rag.answer.compose`): best sentence(s) per part or list items,
   trimmed to whole clauses.
5. **Answerability** (:func:`rag.answer.features.answer_features` + two fitted logistic
   regressions with Platt scaling): P(answerable), and ``confidence`` = P(answerable) x
   P(the quote holds the answer | answerable), the calibrated probability that the answer is
   right. When P(answerable) is below the fitted threshold (or ``settings.abstain_threshold``
   when set) the answer is ``未找到相关内容。``, followed by up to two clearly marked
   low-confidence snippets when some candidate shares a topic word and the question names no
   person, place or organisation the archive lacks.

Answer text. A quoted span is shown as its raw text with whitespace removed
(:func:`rag.answer.textutil.display_text`); fixed template glue only:

* factoid: ``{span}[1]`` (one line per quoted span: ``{span}[n]``)
* list: ``根据资料：`` then one line per span, ``{n}. {span}[n]``
* abstention: exactly ``未找到相关内容。``, or ``未找到相关内容。以下片段可能相关（低置信度）：`` +
  lines ``{n}. {span}[n]`` (``low_confidence`` True).

So :func:`rag.answer.textutil.strip_template` of the text equals the concatenation of the cited
spans' display text, and every citation satisfies ``raw[start:end] == text``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..archive import ArchiveView
from ..config import Settings
from ..types import Citation, Hit, Span
from .compose import (Choice, add_bylines, budget, duplicate, choose_factoid, choose_list, choose_parts,
                      clause_window, compose_text, group_by_source, order_candidates)
from .features import SENTENCE_FEATURES, Prepared, answer_features, part_question, prepare, sentence_features
from .model import AnswerModel
from .question import QuestionAnalysis, analyse_question
from .sentences import FactsCache, pos_cut
from .synonyms import load as load_synonyms
from .textutil import LOW_CONFIDENCE_LEAD, NOT_FOUND

__all__ = ["Candidate", "AnswerDraft", "Answerer", "Case", "COMPOSE_PARAMS"]

#: Composition parameters the model file must set (chosen by cross-validation in
#: eval/fit_answerer.py): runner-up ratio for factoids, list-item probability ratio, whether list
#: items go round robin over documents (0/1), weight of the other parts' topic words in a part,
#: weight of the whole question's sentence scores in a part's (the rest: the part's own), and the
#: clause-window lengths (characters).
COMPOSE_PARAMS = ("factoid_second_ratio", "list_min_ratio", "list_by_source", "part_other_weight",
                  "part_whole_weight", "factoid_full_chars", "factoid_window_chars", "list_window_chars")
#: Low-confidence snippets shown after an abstention (two: enough to point somewhere, short
#: enough not to read as an answer).
SNIPPETS = 2


@dataclass(frozen=True)
class Candidate:
    """One sentence inside a retrieved chunk.

    Attributes:
        span: Verbatim raw span (``text == raw[start:end]``) and its clean text.
        vector: float32 (dim,), L2-normalised sentence embedding computed at index time.
        chunk_rank: 1-based rank of the best hit containing it.
        chunk_score: That hit's fused score (hybrid: [0, 1]).
        paragraph: Paragraph ordinal within its document.
        sentence_index: Global sentence id (adjacent ids = adjacent sentences of a document).
        heading: The layout flags it as a heading/byline line (:func:`rag.text.document_spans`).
            Default False: then a line of its own without terminal punctuation counts as one.
        section: The nearest heading block before it (title, byline), "" if unknown.
    """

    span: Span
    vector: np.ndarray
    chunk_rank: int
    chunk_score: float
    paragraph: int
    sentence_index: int
    heading: bool = False
    section: str = ""


@dataclass(frozen=True)
class AnswerDraft:
    """What the answerer returns to the pipeline.

    Attributes:
        text: Answer text with ``[n]`` markers, or starting with :data:`NOT_FOUND`.
        citations: The quoted spans, ``id`` == marker number.
        abstained: True when the calibrated P(answerable) is below the threshold.
        confidence: Calibrated probability in [0, 1] that the composed answer is right
            (P(answerable) x P(the quote holds the answer | answerable)).
        question_type: ``"factoid"`` or ``"list"``.
        low_confidence: True when the citations are only nearest snippets after abstaining.
    """

    text: str
    citations: tuple[Citation, ...]
    abstained: bool
    confidence: float
    question_type: str
    low_confidence: bool


@dataclass
class Case:
    """One question's analysis, prepared candidates and feature matrices (the whole question's
    and each part's). The fit script builds these once and re-scores them with other models."""

    question: QuestionAnalysis
    prep: Prepared
    X: np.ndarray
    part_questions: list[QuestionAnalysis] = field(default_factory=list)
    part_X: list[np.ndarray] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """``"dense"`` when the candidates carry usable cosines, else ``"lexical"``."""
        return "dense" if self.prep.dense is not None else "lexical"


class Answerer:
    """Extractive answers with citations and calibrated abstention.

    Args:
        settings: Uses ``abstain_threshold`` (None: the model's fitted threshold),
            ``answer_max_sentences``, ``answer_max_chars`` (characters) and ``base_url``.
        model: The fitted :class:`AnswerModel` (default: the bundled file, loaded on first use).

    Raises:
        AnswerModelError: (on first use) the model file is missing or unusable.
    """

    def __init__(self, settings: Settings, model: AnswerModel | None = None):
        self.settings = settings
        self._model = model
        self._lock = threading.Lock()
        self.cache = FactsCache()

    @property
    def model(self) -> AnswerModel:
        """The fitted model (loaded on first access)."""
        with self._lock:
            if self._model is None:
                self._model = AnswerModel.load()
            return self._model

    @property
    def answer_hits(self) -> int:
        """How many hits the model was fitted to read (chosen by cross-validation; 5 for a model
        file that does not record it, the number its first version was fitted with)."""
        return max(1, int(getattr(self.model, "compose", {}).get("answer_hits", 5)))

    def threshold(self, mode: str = "dense") -> float:
        """The abstention threshold in force: ``settings.abstain_threshold`` or the model's for
        ``mode`` (``"dense"`` or ``"lexical"``)."""
        t = getattr(self.settings, "abstain_threshold", None)
        return self.model.threshold_for(mode) if t is None else float(t)

    def warm_up(self, archive: ArchiveView | None = None, doc_ids: Sequence[str] = ()) -> None:
        """Load the model and the jieba tagger, fill the archive's term statistics and tag the
        given documents now instead of on the first questions. Idempotent."""
        _ = self.model
        pos_cut("辽源")
        load_synonyms()
        if archive is not None:
            archive.idf("辽源")
            for doc_id in doc_ids:
                doc = archive.document(doc_id)
                if doc is not None:
                    self.cache.document(doc.doc_id, doc.text)

    # --- the pieces (also used by eval/fit_answerer.py) --------------------------------------

    def _dense_fits(self, query_vector: np.ndarray | None) -> bool:
        """Whether the model's dense features were fitted for this embedder (same model id in
        the settings, same dimension). If not, the answerer runs in lexical mode, which the
        model is fitted for as well (every training question is also fitted without its vector)."""
        if query_vector is None:
            return False
        training = getattr(self.model, "training", {}) or {}
        want_model, want_dim = training.get("embedding_model"), training.get("embedding_dim")
        dim = int(np.asarray(query_vector).reshape(-1).shape[0])
        return not ((want_model and want_model != self.settings.model_id) or (want_dim and int(want_dim) != dim))

    def case(self, question: str, query_vector: np.ndarray | None, hits: Sequence[Hit],
             candidates: Sequence[Candidate], archive: ArchiveView,
             part_other_weight: float | None = None) -> Case:
        """Analyse the question and compute the candidates' features.

        ``part_other_weight`` (default: the model's) weighs the other parts' topic words in a
        part of a compound question.

        Raises:
            ValueError: ``query_vector`` and a candidate vector have different dimensions.
        """
        q = analyse_question(question, archive)
        prep = prepare(candidates, query_vector, hits, archive, self.cache,
                       use_dense=self._dense_fits(query_vector))
        X = sentence_features(q, prep)
        case = Case(q, prep, X)
        if q.parts and len(prep):
            other = self.model.compose["part_other_weight"] if part_other_weight is None else part_other_weight
            case.part_questions = [part_question(q, p, other) for p in q.parts]
            case.part_X = [sentence_features(p, prep) for p in case.part_questions]
        return case

    def compose(self, case: Case, logits: np.ndarray, part_logits: Sequence[np.ndarray],
                params: dict[str, float] | None = None) -> list[Choice]:
        """Choose and trim the quoted sentences (see :mod:`rag.answer.compose`)."""
        params = {**self.model.compose, **(params or {})}
        q, prep = case.question, case.prep
        if not len(prep):
            return []
        order = order_candidates(prep, logits)
        max_n = max(1, int(self.settings.answer_max_sentences))
        firsts: list[tuple[int, int]] = []
        if case.part_questions:
            a = float(params["part_whole_weight"])
            firsts = choose_parts(case.part_questions, prep, [a * logits + (1.0 - a) * p for p in part_logits])
        questions = case.part_questions or [q]
        if q.qtype == "list":
            picked = choose_list(prep, logits, order, params["list_min_ratio"], max_n,
                                 [i for i, _ in firsts], by_source=bool(params["list_by_source"]))
            part_of = {i: k for i, k in firsts}
            choices = [Choice(i, clause_window(prep.spans[i], questions[part_of.get(i, 0)] if i in part_of else q,
                                               int(params["list_window_chars"]),
                                               int(params["list_window_chars"])), part_of.get(i, 0))
                       for i in picked]
            kept = budget([c.span for c in choices], max(1, int(self.settings.answer_max_chars)))
            return group_by_source([choices[k] for k in kept])
        if firsts:
            picked_parts = firsts
        else:
            picked_parts = [(i, 0) for i in choose_factoid(q, prep, logits, order,
                                                             params["factoid_second_ratio"])]
        full, window = int(params["factoid_full_chars"]), int(params["factoid_window_chars"])
        return add_bylines([Choice(i, clause_window(prep.spans[i], questions[k], full, window), k)
                            for i, k in picked_parts], questions, prep)

    def scores(self, case: Case, logits: np.ndarray, choices: Sequence[Choice]) -> tuple[float, float]:
        """``(P(answerable), confidence)`` of the composed answer, both calibrated probabilities
        in [0, 1]; ``(0, 0)`` without choices."""
        if not choices:
            return 0.0, 0.0
        feats = answer_features(case.question, case.prep, case.X, logits, [c.index for c in choices])
        return self.model.answerable(feats, case.mode), self.model.confidence(feats, case.mode)

    def logits(self, case: Case) -> tuple[np.ndarray, list[np.ndarray]]:
        """Sentence-scorer log-odds for the whole question and for each part."""
        model = self.model
        return model.sentence_logits(case.X), [model.sentence_logits(X) for X in case.part_X]

    def draft(self, case: Case, choices: Sequence[Choice], answerable: float, confidence: float,
              archive: ArchiveView, logits: np.ndarray | None = None) -> AnswerDraft:
        """The final :class:`AnswerDraft` for composed ``choices``: abstain when ``answerable`` is
        below the threshold."""
        q = case.question
        if not choices or not q.weights or q.unknown_share >= 1.0 or q.future_day:
            # Nothing the question is about occurs in the archive, or it asks about a day after
            # the question (明天): no quote can be about it.
            return AnswerDraft(NOT_FOUND, (), True, 0.0, q.qtype, False)
        if answerable < self.threshold(case.mode):
            return self._abstain(case, confidence, archive, logits)
        text, citations = compose_text([c.span for c in choices], q.qtype == "list", archive,
                                       self.settings.base_url)
        return AnswerDraft(text, citations, False, confidence, q.qtype, False)

    # --- public --------------------------------------------------------------------------------

    def answer(self, question: str, query_vector: np.ndarray | None, hits: Sequence[Hit],
               candidates: Sequence[Candidate], archive: ArchiveView) -> AnswerDraft:
        """Compose the answer to ``question`` from ``candidates``.

        Args:
            question: The validated question.
            query_vector: float32 (dim,), L2-normalised, or None (lexical features only).
            hits: Retrieved chunks in rank order (their text feeds answerability).
            candidates: Sentences of those chunks. Candidates whose span does not match
                ``archive.document(doc_id).text[start:end]`` are ignored (the citation invariant).
            archive: Stored texts and term statistics (:class:`rag.archive.ArchiveView`).

        Returns:
            An :class:`AnswerDraft` (text format in the module docstring).

        Raises:
            ValueError: ``query_vector`` and a candidate vector have different dimensions.
            AnswerModelError: the model file is missing or unusable.
        """
        case = self.case(question, query_vector, hits, candidates, archive)
        if not len(case.prep):
            return AnswerDraft(NOT_FOUND, (), True, 0.0, case.question.qtype, False)
        logits, part_logits = self.logits(case)
        choices = self.compose(case, logits, part_logits)
        answerable, confidence = self.scores(case, logits, choices)
        return self.draft(case, choices, answerable, confidence, archive, logits)

    def _abstain(self, case: Case, confidence: float, archive: ArchiveView,
                 logits: np.ndarray | None) -> AnswerDraft:
        q, prep = case.question, case.prep
        lex_col = case.X[:, SENTENCE_FEATURES.index("lex")]
        if logits is None or q.unknown_entities or not len(prep):
            return AnswerDraft(NOT_FOUND, (), True, confidence, q.qtype, False)
        near: list[int] = []
        for i in order_candidates(prep, logits):
            if len(near) < SNIPPETS and lex_col[i] > 0 and not duplicate(prep, i, near):
                near.append(i)
        if not near:
            return AnswerDraft(NOT_FOUND, (), True, confidence, q.qtype, False)
        window = int(self.model.compose["factoid_window_chars"])
        spans = [clause_window(prep.spans[i], q, window, window) for i in near]
        text, citations = compose_text(spans, True, archive, self.settings.base_url, lead=LOW_CONFIDENCE_LEAD)
        return AnswerDraft(text, citations, True, confidence, q.qtype, True)
