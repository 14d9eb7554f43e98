"""zoo.baseline: leak-free TF-IDF + logistic regression, on toy data and on real SST-2."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import datasets
import pytest

from zoo.baseline import run_baseline

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible"]
NEUTRAL = ["the", "movie", "film", "plot", "acting", "was", "a", "story", "and", "it"]


def toy_split(n: int, rng: random.Random, *, labelled: bool = True) -> dict[str, list]:
    """Sentences of neutral noise with two or three sentiment words of the label's class."""
    sentences, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(NEUTRAL, 5) + rng.sample(POSITIVE if label else NEGATIVE, rng.choice([2, 3]))
        rng.shuffle(words)
        sentences.append(" ".join(words))
        labels.append(label if labelled else -1)
    return {"idx": list(range(n)), "sentence": sentences, "label": labels}


@pytest.fixture(scope="module")
def toy_dataset() -> datasets.DatasetDict:
    rng = random.Random(0)
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(toy_split(200, rng)),
        "validation": datasets.Dataset.from_dict(toy_split(60, rng)),
        "test": datasets.Dataset.from_dict(toy_split(30, rng, labelled=False)),
    })


def test_toy_baseline_learns_and_writes(toy_dataset, tmp_path):
    result = run_baseline(toy_dataset, tmp_path, seed=0)
    assert result["model"] == "tfidf-logreg"
    assert result["dev_accuracy"] > 0.9
    assert (result["leaky"], result["n_train"], result["n_dev"], result["n_tfidf_fit"]) == (False, 200, 60, 200)
    assert json.loads((tmp_path / "baseline.json").read_text()) == result
    report = json.loads((tmp_path / "dev_report.json").read_text())
    assert report["accuracy"] == result["dev_accuracy"] and report["n"] == 60
    assert report["label_names"] == ["negative", "positive"]
    assert (tmp_path / "dev_report.txt").exists() and (tmp_path / "dev_confusion.png").stat().st_size > 0
    # The unlabelled test split gets predictions, never a score.
    predictions = (tmp_path / "test_predictions.tsv").read_text().splitlines()
    assert predictions[0] == "index\tprediction" and len(predictions) == 31
    assert not list(tmp_path.glob("test_report*"))


def test_leaky_flag_fits_tfidf_on_validation_too(toy_dataset):
    with pytest.warns(UserWarning, match="train \\+ validation"):
        leaky = run_baseline(toy_dataset, leaky=True)
    assert leaky["leaky"] is True
    assert leaky["n_tfidf_fit"] == 200 + 60
    assert leaky["n_train"] == 200  # the classifier still trains on train only


def read_glue_tsv(path: Path) -> dict[str, list]:
    """Minimal GLUE SST-2 reader (kept here so this test does not depend on zoo.data)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {"sentence": [row["sentence"] for row in rows], "label": [int(row["label"]) for row in rows]}


SST2_DIR = Path(os.environ.get("ZOO_SST2_DIR") or Path(__file__).resolve().parents[2] / "shared/data/SST-2")


@pytest.mark.skipif(not (SST2_DIR / "train.tsv").exists(), reason=f"SST-2 not found at {SST2_DIR}")
def test_real_sst2_baseline():
    dataset = datasets.DatasetDict({
        name: datasets.Dataset.from_dict(read_glue_tsv(SST2_DIR / f"{file}.tsv"))
        for name, file in (("train", "train"), ("validation", "dev"))
    })
    result = run_baseline(dataset)
    assert result["leaky"] is False
    assert (result["n_train"], result["n_dev"]) == (67349, 872)
    assert 0.78 <= result["dev_accuracy"] <= 0.86, result
