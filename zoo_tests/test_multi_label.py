"""Multi-label classification (``multi-label-classification``): label sets read from every
file format, the metrics against scikit-learn, a tiny run end to end through the command line
(train, evaluate, predict, export to transformers' layout and back), and the one-line
errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

import zoo
from zoo.cli import main as cli_main
from zoo.data import DataFormatError
from zoo.dataset import DatasetSpec, load_task_data
from zoo.tasks import MultiLabelMetrics, get_task
from zoo.tasks.multi_label import macro_f1, micro_f1, multi_label_summary

pytestmark = pytest.mark.usefixtures("private_cache")  # zoo_tests/conftest.py

WORDS = {"anger": "furious rage hate angry", "fear": "scared afraid dread panic",
         "joy": "happy delight great smile"}
FILLER = "the movie was and a day it felt".split()


def _examples(n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        labels = [label for label in WORDS if rng.random() < 0.4]
        words = list(rng.choice(FILLER, 4))
        for label in labels:
            words += list(rng.choice(WORDS[label].split(), 2, replace=False))
        rng.shuffle(words)
        out.append((" ".join(words), labels))
    return out


def _jsonl(path: Path, examples) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": labels}) + "\n"
                            for t, labels in examples))
    return path


def _spec(train: Path, dev: Path, task=None) -> DatasetSpec:
    return DatasetSpec("files", "text", None, "label", task=task,
                       files=(("train", str(train)), ("validation", str(dev))))


# ------------------------------------------------------------------------------ data


def test_label_lists_infer_the_task_and_become_multi_hot_rows(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [("a", ["joy", "fear"]), ("b", []),
                                              ("c", ["anger"]), ("d", ["joy"])])
    dev = _jsonl(tmp_path / "dev.jsonl", [("e", ["fear"]), ("f", ["joy", "anger", "fear"])])
    data = load_task_data(_spec(train, dev))
    assert data.task == "multi-label-classification"
    assert data.label_names == ("anger", "fear", "joy")
    assert data.splits["train"].labels.tolist() == [[0, 1, 1], [0, 0, 0], [1, 0, 0],
                                                    [0, 0, 1]]
    assert data.splits["validation"].labels.tolist() == [[0, 1, 0], [1, 1, 1]]


def test_csv_cells_split_at_commas_and_numeric_ids(tmp_path):
    (tmp_path / "t.csv").write_text('text,label\nx,"2,0"\ny,\nz,1\nw," 0 , 1 "\n')
    data = load_task_data(_spec(tmp_path / "t.csv", tmp_path / "t.csv",
                                task="multi-label-classification"))
    assert data.label_names == ("0", "1", "2")
    assert data.splits["train"].labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0],
                                                    [1, 1, 0]]


@pytest.mark.parametrize("train, dev, words", [
    ([("a", ["joy"]), ("b", ["joy"])], [("c", ["joy"])], "only the label 'joy' occurs"),
    ([("a", []), ("b", [])], [("c", [])], "no example has a label"),
    ([("a", [["joy"]]), ("b", ["fear"])], [("c", ["joy"])], r"line 1, column 'label': label"),
    ([("a", ["joy"]), ("b", [1.5])], [("c", ["joy"])], "label 1.5 is a float"),
    ([("a", ["joy"]), ("b", ["fear"])], [("c", ["sadness"])],
     r"dev.jsonl, line 1, column 'label': label 'sadness' is neither"),
])
def test_bad_label_sets_are_one_line_errors(tmp_path, train, dev, words):
    spec = _spec(_jsonl(tmp_path / "train.jsonl", train), _jsonl(tmp_path / "dev.jsonl", dev))
    with pytest.raises(DataFormatError, match=words) as info:
        load_task_data(spec)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ metrics


def test_metrics_merge_over_batches_and_equal_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.random((50, 5)) < 0.3
    logits = rng.normal(size=(50, 5)).astype(np.float32)
    truth[:, 4] = False  # a label that never occurs ...
    logits[:, 4] = -1.0  # ... nor is predicted: left out of the macro mean
    weights = np.ones(50, np.float32)
    weights[-3:] = 0  # filler rows
    total = None
    for start in range(0, 50, 16):
        part = slice(start, start + 16)
        update = MultiLabelMetrics.single_from_model_output(
            logits=logits[part], labels=truth[part].astype(np.float32),
            loss=np.zeros(len(logits[part])), mask=weights[part] > 0)
        total = update if total is None else total.merge(update)
    got = total.compute()
    real = slice(0, 47)
    predicted = logits[real] >= 0
    assert got["f1"] == pytest.approx(f1_score(truth[real], predicted, average="micro"))
    assert got["f1_macro"] == pytest.approx(
        f1_score(truth[real, :4], predicted[:, :4], average="macro", zero_division=0))
    assert got["exact_match"] == pytest.approx(np.mean(np.all(truth[real] == predicted, -1)))
    summary = multi_label_summary(truth[real], predicted, list("abcde"))
    assert summary["f1_micro"] == pytest.approx(got["f1"])
    assert [row["support"] for row in summary["labels"]] == truth[real].sum(0).tolist()
    assert micro_f1(np.zeros((0, 3))) == macro_f1(np.zeros((0, 3))) == 0.0


def test_the_loss_is_transformers_bce_with_logits():
    """Mean over labels and examples of the binary cross-entropy with logits."""
    import jax.numpy as jnp

    task = get_task("multi-label-classification")
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], np.float32)
    labels = np.array([[1, 0, 0], [0, 1, 1]], np.float32)

    class Head:  # a stand-in model: returns fixed logits
        def __call__(self, *args, **kwargs):
            return jnp.asarray(logits)

    loss, _, _ = task.forward(Head(), {"input_ids": None, "attention_mask": None,
                                       "labels": jnp.asarray(labels),
                                       "weights": jnp.ones(2)}, None)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    want = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert float(loss) == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------ end to end


def test_train_evaluate_predict_and_export(tmp_path, capsys):
    train = _jsonl(tmp_path / "train.jsonl", _examples(300, 0))
    dev = _jsonl(tmp_path / "dev.jsonl", _examples(60, 1))
    run = tmp_path / "run"
    assert cli_main(["train", "--model", "bert-tiny", "--vocab-size", "400",
                     "--train-file", str(train),
                     "--validation-file", str(dev), "--max-steps", "50", "--out", str(run),
                     "--batch-size", "16", "--max-len", "32", "--eval-every", "25",
                     "--seed", "0", "--quiet", "--lr", "3e-3"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "multi-label-classification"
    assert summary["labels"] == ["anger", "fear", "joy"]
    assert summary["dev_f1"] > 0.8  # the words give the labels away
    assert "micro F1" in (run / "dev_report.txt").read_text()

    model = zoo.load(str(run))
    texts = [t for t, _ in _examples(60, 1)]
    gold = np.array([[label in labels for label in WORDS] for _, labels in _examples(60, 1)])
    predictions = model.predict(texts)
    predicted = np.array([[label in p.labels for label in model.info.labels]
                          for p in predictions])
    capsys.readouterr()
    assert cli_main(["evaluate", str(run), "--data-file", str(dev), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["f1"] == pytest.approx(f1_score(gold, predicted, average="micro"), abs=1e-6)
    assert metrics["exact_match"] == pytest.approx(np.mean(np.all(gold == predicted, -1)),
                                                   abs=1e-6)
    assert cli_main(["predict", str(run), "happy smile furious", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(line) == {"text", "labels", "scores"}
    assert line["scores"] == sorted(line["scores"], reverse=True)
    assert all(s >= 0.5 for s in line["scores"])

    # transformers' layout: a ForSequenceClassification with problem_type multi-label, read
    # back as the same model
    out = tmp_path / "hf"
    assert cli_main(["export", str(run), "--format", "hf", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "anger", "1": "fear", "2": "joy"}
    back = zoo.load(str(out))
    assert back.task.name == "multi-label-classification"
    again = back.predict(texts[:8])
    for a, b in zip(predictions[:8], again):
        assert a.labels == b.labels
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
