"""The fitted answer model: loads ``rag/data/answer_model.json`` (written by
``eval/fit_answerer.py``) and evaluates it with numpy alone (no pickle, no scikit-learn at run
time).

The file holds:

* ``sentence``: the sentence scorer, P(sentence holds a gold key | features), either a
  standardised logistic regression (``{"kind": "logistic", "mean", "scale", "coef",
  "intercept"}``) or gradient-boosted regression trees (``{"kind": "trees", "init",
  "learning_rate", "trees": [{"feature", "threshold", "left", "right", "value"}, ...]}``, the
  arrays of scikit-learn's ``tree_`` attributes; a leaf has ``left == -1``);
* ``heads``: for each mode (``dense``: with the query vector of the embedder the model was
  fitted for; ``lexical``: without one), ``answerability``: a standardised logistic regression
  or gradient-boosted trees (same layouts as ``sentence``, chosen by cross-validation)
  over :data:`ANSWER_FEATURES` whose decision value is mapped to a probability by Platt scaling
  (Platt 1999, ``p = 1 / (1 + exp(a * f + b))``, scikit-learn
  ``CalibratedClassifierCV(method="sigmoid")``): P(the archive answers the question | features);
  ``correctness``: the same form, fitted on answerable questions only: P(the composed answer
  holds the answer | answerable, features); ``threshold``: the abstention threshold on
  P(answerable);
* ``compose``: composition parameters chosen by cross-validation;
* ``features``: the column names of both feature sets (checked on load);
* ``training``: the sha256 of the training data, the split sizes, the embedding model and the
  cross-validated figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RagError
from .features import ANSWER_FEATURES, SENTENCE_FEATURES

__all__ = ["AnswerModel", "MODEL_PATH", "AnswerModelError", "FORMAT_VERSION"]

#: The bundled model file.
MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "answer_model.json"
#: Version of the file layout; bumped when fields change meaning.
FORMAT_VERSION = 1


class AnswerModelError(RagError):
    """The answer model file is missing, malformed or fitted for other features."""

    exit_code = 3
    http_status = 500


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


@dataclass
class _Logistic:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def of(cls, d: dict) -> "_Logistic":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64),
                   np.asarray(d["coef"], dtype=np.float64), float(d["intercept"]))

    def decision(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept


class _Trees:
    """Gradient-boosted regression trees evaluated all at once: the trees' node arrays are
    padded to one width, and every row walks every tree in ``depth`` vectorised steps."""

    def __init__(self, init: float, learning_rate: float, trees: list[dict]):
        self.init = init
        self.learning_rate = learning_rate
        width = max(len(t["feature"]) for t in trees)

        def pad(key, fill, dtype):
            return np.array([list(t[key]) + [fill] * (width - len(t[key])) for t in trees], dtype=dtype)

        self.feature = np.maximum(pad("feature", 0, np.int64), 0)
        self.threshold = pad("threshold", 0.0, np.float64)
        self.left = pad("left", -1, np.int64)
        self.right = pad("right", -1, np.int64)
        self.value = pad("value", 0.0, np.float64)
        self.leaf = self.left < 0
        self.depth = self._max_depth()

    def _max_depth(self) -> int:
        """Longest root-to-leaf path over all trees.

        Raises:
            ValueError: a tree deeper than 64 levels (a malformed or cyclic file).
        """
        best = 0
        for t in range(len(self.feature)):
            stack = [(0, 0)]
            while stack:
                node, d = stack.pop()
                if d > 64:
                    raise ValueError("tree deeper than 64 levels or cyclic")
                if self.leaf[t, node]:
                    best = max(best, d)
                else:
                    stack += [(self.left[t, node], d + 1), (self.right[t, node], d + 1)]
        return best

    @classmethod
    def of(cls, d: dict) -> "_Trees":
        return cls(float(d["init"]), float(d["learning_rate"]), list(d["trees"]))

    def decision(self, X: np.ndarray) -> np.ndarray:
        n, trees = X.shape[0], self.feature.shape[0]
        tree_idx = np.broadcast_to(np.arange(trees), (n, trees))
        node = np.zeros((n, trees), dtype=np.int64)
        row_idx = np.broadcast_to(np.arange(n)[:, None], (n, trees))
        for _ in range(self.depth):
            f = self.feature[tree_idx, node]
            go_left = X[row_idx, f] <= self.threshold[tree_idx, node]
            nxt = np.where(go_left, self.left[tree_idx, node], self.right[tree_idx, node])
            node = np.where(self.leaf[tree_idx, node], node, nxt)
        return self.init + self.learning_rate * self.value[tree_idx, node].sum(axis=1)


def _scorer(d: dict):
    if d.get("kind") == "logistic":
        return _Logistic.of(d)
    if d.get("kind") == "trees":
        return _Trees.of(d)
    raise ValueError(f"unknown scorer kind {d.get('kind')!r}")


@dataclass
class _Head:
    """The answerability part for one mode: two calibrated logistic regressions and a threshold."""

    answerability: Any
    platt: tuple[float, float]
    correctness: Any
    correct_platt: tuple[float, float]
    threshold: float

    @classmethod
    def of(cls, d: dict) -> "_Head":
        ans, cor = d["answerability"], d["correctness"]
        return cls(_scorer(ans), (float(ans["platt_a"]), float(ans["platt_b"])), _scorer(cor),
                   (float(cor["platt_a"]), float(cor["platt_b"])), float(d["threshold"]))

    @staticmethod
    def _p(lr, platt: tuple[float, float], features: np.ndarray) -> float:
        f = float(lr.decision(features.reshape(1, -1))[0])
        return float(1.0 / (1.0 + np.exp(np.clip(platt[0] * f + platt[1], -50.0, 50.0))))


#: The answerer's two modes: with the query vector of the embedder the model was fitted for
#: (``dense``), or without one (``lexical``); each has its own answerability head.
MODES = ("dense", "lexical")


@dataclass
class AnswerModel:
    """A loaded answer model (see the module docstring for the file layout).

    Attributes:
        sentence: The sentence scorer.
        heads: Per mode (:data:`MODES`), the answerability/correctness regressions and threshold.
        compose: Composition parameters (``factoid_second_ratio``, ``list_min_ratio``,
            ``part_other_weight``, clause-window lengths).
        training: Provenance: data sha256, sizes, embedding model and dimension, CV figures.
    """

    sentence: Any
    heads: dict[str, _Head]
    compose: dict[str, float]
    training: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def threshold(self) -> float:
        """The dense-mode abstention threshold on P(answerable)."""
        return self.heads["dense"].threshold

    @classmethod
    def from_dict(cls, d: dict, path: str = "") -> "AnswerModel":
        """Build from the parsed JSON.

        Raises:
            AnswerModelError: wrong format version, feature columns that differ from this code's,
                missing composition parameters, a threshold outside [0, 1], or missing/ill-typed
                fields.
        """
        where = path or "<dict>"
        try:
            if d.get("format") != FORMAT_VERSION:
                raise AnswerModelError(f"answer model {where} has format {d.get('format')!r}, "
                                       f"this code reads {FORMAT_VERSION}",
                                       hint="re-run .venv/bin/python eval/fit_answerer.py")
            feats = d["features"]
            if tuple(feats["sentence"]) != SENTENCE_FEATURES or tuple(feats["answer"]) != ANSWER_FEATURES:
                raise AnswerModelError(f"answer model {where} was fitted on other feature columns",
                                       hint="re-run .venv/bin/python eval/fit_answerer.py")
            model = cls(sentence=_scorer(d["sentence"]), heads={m: _Head.of(d["heads"][m]) for m in MODES},
                        compose={k: float(v) for k, v in d["compose"].items()},
                        training=dict(d.get("training", {})), path=path)
        except AnswerModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise AnswerModelError(f"answer model {where} is malformed: {err!r}",
                                   hint="re-run .venv/bin/python eval/fit_answerer.py") from err
        from .answerer import COMPOSE_PARAMS

        missing = [k for k in COMPOSE_PARAMS if k not in model.compose]
        if missing:
            raise AnswerModelError(f"answer model {where} lacks composition parameters {missing}",
                                   hint="re-run .venv/bin/python eval/fit_answerer.py")
        for mode, head in model.heads.items():
            if not 0.0 <= head.threshold <= 1.0:
                raise AnswerModelError(f"answer model {where}: {mode} threshold {head.threshold} is outside [0, 1]",
                                       hint="re-run .venv/bin/python eval/fit_answerer.py")
        return model

    @classmethod
    def load(cls, path: str | Path | None = None) -> "AnswerModel":
        """Load a model file (default: the bundled :data:`MODEL_PATH`).

        Raises:
            AnswerModelError: the file is missing, not JSON, or not a model this code can use.
        """
        path = Path(path) if path is not None else MODEL_PATH
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise AnswerModelError(f"cannot read the answer model {path}: {err}",
                                   hint="re-install the package or re-run .venv/bin/python eval/fit_answerer.py") from err
        if not isinstance(data, dict):
            raise AnswerModelError(f"answer model {path} is not a JSON object",
                                   hint="re-run .venv/bin/python eval/fit_answerer.py")
        return cls.from_dict(data, str(path))

    def sentence_logits(self, X: np.ndarray) -> np.ndarray:
        """Sentence-scorer log-odds, float64 (n,), for a (n, len(SENTENCE_FEATURES)) matrix."""
        if X.shape[0] == 0:
            return np.zeros(0)
        return self.sentence.decision(X)

    def threshold_for(self, mode: str) -> float:
        """The abstention threshold on P(answerable) in ``mode`` (:data:`MODES`)."""
        return self.heads[mode].threshold

    def answerable(self, features: np.ndarray, mode: str = "dense") -> float:
        """Calibrated P(the archive answers the question) in [0, 1], for one
        :data:`ANSWER_FEATURES` vector (compared with :meth:`threshold_for`)."""
        head = self.heads[mode]
        return head._p(head.answerability, head.platt, features)

    def confidence(self, features: np.ndarray, mode: str = "dense") -> float:
        """Calibrated probability in [0, 1] that the composed answer is right:
        P(answerable) x P(the answer holds it | answerable)."""
        head = self.heads[mode]
        return self.answerable(features, mode) * head._p(head.correctness, head.correct_platt, features)


def sigmoid(z):
    """The logistic function, clipped to avoid overflow."""
    return _sigmoid(z)
