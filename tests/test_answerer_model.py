"""The fitted answer model file: provenance, loading, errors, and that the numpy evaluation
reproduces scikit-learn (the fit script's export)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.answer import MODEL_PATH, AnswerModel, AnswerModelError
from rag.answer.answerer import COMPOSE_PARAMS
from rag.answer.features import ANSWER_FEATURES, SENTENCE_FEATURES
from rag.config import PROJECT_ROOT


def _fit_script():
    spec = importlib.util.spec_from_file_location("fit_answerer", PROJECT_ROOT / "eval" / "fit_answerer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fit():
    return _fit_script()


@pytest.fixture(scope="module")
def bundled() -> dict:
    return json.loads(MODEL_PATH.read_text(encoding="utf-8"))


def test_bundled_model_loads_and_is_small(bundled):
    model = AnswerModel.load()
    assert 0.0 < model.threshold_for("dense") < 1.0 and 0.0 < model.threshold_for("lexical") < 1.0
    assert set(model.compose) >= set(COMPOSE_PARAMS)
    assert MODEL_PATH.stat().st_size < 200_000
    assert bundled["features"] == {"sentence": list(SENTENCE_FEATURES), "answer": list(ANSWER_FEATURES)}


def test_bundled_model_was_fitted_on_the_committed_training_data(fit, bundled):
    """The recorded sha256 is that of the training files as committed (train, dev and the three
    earlier user-style splits); the validation split test3 and the untouched test4 are never
    training data."""
    training = bundled["training"]
    assert set(training["files"]) == {"train.jsonl", "gold.jsonl", "heldout.jsonl", "test.jsonl", "test2.jsonl"}
    assert not {"test3.jsonl", "test4.jsonl"} & {p.name for p in fit.TRAIN_FILES}
    combined, per_file = fit.sha256_files([p for p in fit.TRAIN_FILES])
    assert training["files"] == per_file
    assert training["data_sha256"] == combined
    assert training["embedding_model"] == "multilingual-e5-small"
    assert training["embedding_dim"] == 384


def test_bundled_model_probabilities_are_probabilities():
    model = AnswerModel.load()
    rng = np.random.default_rng(0)
    for _ in range(20):
        f = rng.normal(size=len(ANSWER_FEATURES))
        for mode in ("dense", "lexical"):
            assert 0.0 <= model.confidence(f, mode) <= model.answerable(f, mode) <= 1.0
    X = rng.normal(size=(7, len(SENTENCE_FEATURES)))
    assert model.sentence_logits(X).shape == (7,)
    assert model.sentence_logits(np.zeros((0, len(SENTENCE_FEATURES)))).shape == (0,)


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "m.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(format=99), "format"),
    (lambda d: d["features"]["sentence"].pop(), "other feature columns"),
    (lambda d: d["compose"].pop("list_min_ratio"), "composition parameters"),
    (lambda d: d["heads"]["lexical"].update(threshold=1.5), "outside"),
    (lambda d: d["sentence"].update(kind="forest"), "malformed"),
    (lambda d: d["heads"]["dense"].pop("correctness"), "malformed"),
    (lambda d: d["heads"].pop("lexical"), "malformed"),
])
def test_bad_model_files_raise_a_clear_error(tmp_path, bundled, mutate, message):
    data = json.loads(json.dumps(bundled))
    mutate(data)
    with pytest.raises(AnswerModelError, match=message) as err:
        AnswerModel.load(_write(tmp_path, data))
    assert "fit_answerer.py" in err.value.hint


def test_missing_or_non_json_model_file_raises(tmp_path):
    with pytest.raises(AnswerModelError, match="cannot read"):
        AnswerModel.load(tmp_path / "absent.json")
    with pytest.raises(AnswerModelError, match="cannot read"):
        AnswerModel.load(_write(tmp_path, "{not json"))
    with pytest.raises(AnswerModelError, match="not a JSON object"):
        AnswerModel.load(_write(tmp_path, "[1, 2]"))


def _toy_data(n=400, d=len(SENTENCE_FEATURES), seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] * X[:, 3] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return X, y


def _model_with(bundled, sentence=None, answerability=None) -> AnswerModel:
    data = json.loads(json.dumps(bundled))
    if sentence is not None:
        data["sentence"] = sentence
    if answerability is not None:
        for head in data["heads"].values():
            head["answerability"] = answerability
            head["correctness"] = answerability
    return AnswerModel.from_dict(data)


def test_exported_logistic_scorer_matches_scikit_learn(fit, bundled):
    X, y = _toy_data()
    scorer = fit.make_scorer("logistic", 1.0).fit(X, y)
    model = _model_with(bundled, sentence=fit.export_scorer(scorer, X))
    assert np.allclose(model.sentence_logits(X), scorer.decision_function(X), atol=1e-9)


def test_exported_trees_match_scikit_learn(fit, bundled):
    X, y = _toy_data()
    scorer = fit.make_scorer("trees", (3, 40)).fit(X, y)
    model = _model_with(bundled, sentence=fit.export_scorer(scorer, X))
    assert np.allclose(model.sentence_logits(X), scorer.decision_function(X), atol=1e-9)


def test_exported_platt_scaling_matches_scikit_learn(fit, bundled):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _toy_data(d=len(ANSWER_FEATURES), seed=2)
    calibrated = CalibratedClassifierCV(make_pipeline(StandardScaler(), LogisticRegression()),
                                        method="sigmoid", cv=3, ensemble=False).fit(X, y)
    model = _model_with(bundled, answerability=fit.export_calibrated(calibrated))
    expected = calibrated.predict_proba(X)[:, 1]
    got = np.array([model.answerable(row) for row in X])
    assert np.allclose(got, expected, atol=1e-9)
    assert np.allclose([model.confidence(row) for row in X], expected ** 2, atol=1e-9)


def test_training_hash_changes_with_the_data(fit, tmp_path):
    a = tmp_path / "train.jsonl"
    b = tmp_path / "gold.jsonl"
    a.write_text('{"id": "x"}\n', encoding="utf-8")
    b.write_text('{"id": "y"}\n', encoding="utf-8")
    first, per = fit.sha256_files([a, b])
    assert set(per) == {"train.jsonl", "gold.jsonl"}
    b.write_text('{"id": "z"}\n', encoding="utf-8")
    assert fit.sha256_files([a, b])[0] != first


def test_answer_groups_join_questions_answered_by_one_sentence(fit, tmp_path):
    """Questions whose evidence lies in one sentence share a CV group; a question on another
    sentence, an unanswerable one and evidence in another document stay apart."""
    corpus = tmp_path / "seeds"
    corpus.mkdir()
    (corpus / "000_a.txt").write_text("全市有职业院校11所，在校生1.2万人。\n老旧小区改造30个。", encoding="utf-8")
    (corpus / "001_b.txt").write_text("全市有职业院校11所。", encoding="utf-8")
    rows = [
        {"id": "a", "question": "几所职校", "doc": "000", "evidence": ["职业院校11所"], "keys": ["11所"],
         "type": "factoid", "unanswerable": False},
        {"id": "b", "question": "在校生多少", "doc": "000", "evidence": ["在校生1.2万人"], "keys": ["1.2万人"],
         "type": "factoid", "unanswerable": False},
        {"id": "c", "question": "改造几个小区", "doc": "000", "evidence": ["老旧小区改造30个"], "keys": ["30个"],
         "type": "factoid", "unanswerable": False},
        {"id": "d", "question": "另一份几所", "doc": "001", "evidence": ["职业院校11所"], "keys": ["11所"],
         "type": "factoid", "unanswerable": False},
        {"id": "e", "question": "市长多大", "doc": "", "evidence": [], "keys": [], "type": "near_domain",
         "unanswerable": True},
    ]
    gold = tmp_path / "g.jsonl"
    gold.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    groups = fit.answer_groups([gold], corpus)
    assert groups["a"] == groups["b"]
    assert len({groups["a"], groups["c"], groups["d"], groups["e"]}) == 4


def test_fit_refuses_a_missing_training_file(fit, tmp_path, capsys):
    """A mistyped ``--train`` file is an error, not a fit on fewer questions."""
    with pytest.raises(SystemExit) as exc:
        fit.main(["--dry-run", "--train", str(fit.TRAIN_FILES[0]), str(tmp_path / "nope.jsonl")])
    assert exc.value.code == 2
    assert "nope.jsonl" in capsys.readouterr().err
