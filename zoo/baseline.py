"""The tutorial's TF-IDF + logistic-regression baseline, without its validation leak.

The original fit the TF-IDF vocabulary and IDF weights on train + validation text, so the
dev score saw dev statistics. Here the vectorizer sees train text only; the original
behaviour stays reachable behind ``leaky=True`` for comparison, and is marked as such.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from zoo.errors import InvalidArgumentError
from zoo.fsutil import atomic_directory, check_output, entries_are
from zoo.report import write_report

LABEL_NAMES = ("negative", "positive")
MODEL_NAME = "tfidf-logreg"
BASELINE_JSON = "baseline.json"
_FILES = frozenset({BASELINE_JSON, "dev_report.txt", "dev_report.json", "dev_confusion.png",
                    "test_predictions.tsv"})
_WHAT = "a baseline report folder (baseline.json, dev_report.*, test_predictions.tsv)"

log = logging.getLogger(__name__)


def _sentences(split: datasets.Dataset) -> list[str]:
    return list(split["sentence"])


def _labels(split: datasets.Dataset) -> np.ndarray:
    return np.asarray(list(split["label"]), dtype=np.int64)


def _write_test_predictions(test: datasets.Dataset, predictions: np.ndarray, path: Path) -> None:
    """GLUE submission layout (``index<TAB>prediction``): test labels are unknown, so unscored."""
    indices = list(test["idx"]) if "idx" in test.column_names else range(len(test))
    lines = ["index\tprediction", *(f"{index}\t{label}" for index, label in zip(indices, predictions))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_baseline(
    dataset: datasets.DatasetDict,
    out_dir: Path | str | None = None,
    *,
    max_features: int = 10_000,
    leaky: bool = False,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit TF-IDF (train text only) + logistic regression on train; score on validation.

    With ``out_dir`` it writes the dev report (``dev_report.*``), ``baseline.json`` and, when
    the dataset has a test split, ``test_predictions.tsv``; test predictions are never scored.
    The folder is written whole into a temporary sibling and renamed into place; an existing
    ``out_dir`` is replaced only when it is an earlier baseline output and ``overwrite`` is
    set (checked before fitting, so a refusal costs nothing).
    """
    if out_dir is not None:
        check_output(Path(out_dir), overwrite=overwrite, owned=is_baseline_dir, what=_WHAT)
    if isinstance(max_features, bool) or not isinstance(max_features, int) or max_features < 1:
        raise InvalidArgumentError(f"max_features must be a positive int, got {max_features!r}")
    train, dev = dataset["train"], dataset["validation"]
    train_text, dev_text = _sentences(train), _sentences(dev)
    fit_text = train_text
    if leaky:
        message = ("run_baseline(leaky=True): TF-IDF is fit on train + validation text, as in "
                   "the original tutorial; its dev accuracy is not a clean estimate")
        warnings.warn(message, UserWarning, stacklevel=2)
        log.warning(message)
        fit_text = train_text + dev_text

    start = time.perf_counter()  # train_seconds: TF-IDF fit + train transform + classifier fit
    vectorizer = TfidfVectorizer(max_features=max_features).fit(fit_text)
    classifier = LogisticRegression(max_iter=1000, random_state=seed)
    classifier.fit(vectorizer.transform(train_text), _labels(train))
    train_seconds = time.perf_counter() - start

    dev_true = _labels(dev)
    dev_pred = classifier.predict(vectorizer.transform(dev_text))
    result: dict[str, Any] = {
        "model": MODEL_NAME,
        "dev_accuracy": float((dev_true == dev_pred).mean()),
        "train_seconds": train_seconds,
        "leaky": leaky,
        "n_train": len(train_text),
        "n_dev": len(dev_text),
        "n_tfidf_fit": len(fit_text),
        "max_features": max_features,
        "seed": seed,
    }
    if out_dir is not None:
        with atomic_directory(Path(out_dir), overwrite=overwrite, owned=is_baseline_dir,
                              what=_WHAT) as out:
            title = f"{MODEL_NAME} on validation" + (
                " (LEAKY: TF-IDF fit on train + validation)" if leaky else "")
            write_report(out, dev_true, dev_pred, LABEL_NAMES, prefix="dev", title=title)
            if "test" in dataset and len(dataset["test"]):
                test = dataset["test"]
                test_pred = classifier.predict(vectorizer.transform(_sentences(test)))
                _write_test_predictions(test, test_pred, out / "test_predictions.tsv")
            (out / BASELINE_JSON).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def is_baseline_dir(path: Path) -> bool:
    """True when ``path`` holds only what ``run_baseline`` writes, with its ``baseline.json``."""
    try:
        ours = json.loads((path / BASELINE_JSON).read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return False
    return ours == MODEL_NAME and entries_are(path, lambda name: name in _FILES)
