"""The extractive answerer as a package: question analysis (:mod:`.question`, :mod:`.slots`),
per-sentence facts (:mod:`.sentences`), candidate and answer features (:mod:`.features`), the
fitted model (:mod:`.model`), composition (:mod:`.compose`) and the :class:`Answerer` that ties
them together (:mod:`.answerer`). Word lists and their sources: :mod:`.lexicon`."""

from .answerer import AnswerDraft, Answerer, Candidate, Case
from .model import MODEL_PATH, AnswerModel, AnswerModelError
from .question import QuestionAnalysis, analyse_question, content_weights, question_entities, question_type, sub_questions
from .slots import Slot, asked_slots
from .textutil import (LIST_LEAD, LOW_CONFIDENCE_LEAD, NOT_FOUND, bigram_jaccard, display_text, norm,
                       split_clauses, strip_template, strip_whitespace)

__all__ = ["AnswerDraft", "Answerer", "Candidate", "Case", "AnswerModel", "AnswerModelError", "MODEL_PATH",
           "QuestionAnalysis", "analyse_question", "content_weights", "question_entities", "question_type",
           "sub_questions", "Slot", "asked_slots", "LIST_LEAD", "LOW_CONFIDENCE_LEAD", "NOT_FOUND",
           "bigram_jaccard", "display_text", "norm", "split_clauses", "strip_template", "strip_whitespace"]
