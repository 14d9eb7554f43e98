"""Every task end to end through the command line users type, on slices of the shared data:
sentence pairs (MRPC, both families), regression (STS-B), token classification (CoNLL-2003)
and a CSV of one's own with string labels. The metrics ``evaluate --json`` prints are checked
against independent references (scikit-learn, scipy, seqeval) computed from ``predict``."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import zoo
from zoo.cli import main as cli_main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.usefixtures("private_cache")  # zoo_tests/conftest.py

# Tiny, fast runs: two buckets, a few steps; what is checked is the plumbing and the metrics.
COMMON = ["--batch-size", "16", "--max-len", "32", "--eval-every", "10", "--seed", "0",
          "--quiet", "--lr", "3e-3"]


def _head(path: Path, rows: int) -> str:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(lines[:rows + 1])


def _conll(path: Path, sentences: int) -> str:
    blocks = path.read_text(encoding="utf-8").strip().split("\n\n")
    return "\n\n".join(blocks[:sentences]) + "\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for task, train, dev in (("MRPC", 160, 48), ("STS-B", 160, 48)):
        (root / task).mkdir()
        (root / task / "train.tsv").write_text(_head(SHARED / task / "train.tsv", train))
        (root / task / "dev.tsv").write_text(_head(SHARED / task / "dev.tsv", dev))
        # A held-out file in the same layout (the end of the shared dev file, with its header).
        lines = (SHARED / task / "dev.tsv").read_text(encoding="utf-8").splitlines(True)
        (root / task / "heldout.tsv").write_text(lines[0] + "".join(lines[-40:]))
    (root / "ner_train.txt").write_text(_conll(SHARED / "CoNLL-2003" / "train.txt", 150))
    (root / "ner_dev.txt").write_text(_conll(SHARED / "CoNLL-2003" / "dev.txt", 50))
    return root


def _train(out: Path, *args) -> dict:
    assert cli_main(["train", "--out", str(out), *COMMON, *args]) == 0
    return json.loads((out / "summary.json").read_text())


def _evaluate(run: Path, data_file: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli_main(["evaluate", str(run), "--data-file", str(data_file), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("model", ["encoder-m2l-tiny", "bert-tiny"])
def test_pairs_train_predict_and_evaluate(model, data, tmp_path, capsys):
    extra = ["--vocab-size", "400"] if model == "bert-tiny" else []
    summary = _train(tmp_path / "run", "--model", model, "--dataset", "glue/mrpc",
                     "--data-dir", str(data / "MRPC"), "--max-steps", "20", *extra)
    assert summary["task"] == "classification" and summary["labels"] == ["not_equivalent",
                                                                          "equivalent"]
    run = tmp_path / "run"
    loaded = zoo.load(str(run))
    assert loaded.info.labels == ("not_equivalent", "equivalent")
    heldout = data / "MRPC" / "heldout.tsv"
    metrics = _evaluate(run, heldout, capsys)
    assert set(metrics) == {"accuracy", "f1", "mcc", "loss"}
    # The same file through predict (pairs as tuples), scored by scikit-learn.
    rows = [line.rstrip("\n").split("\t") for line in heldout.read_text().splitlines()[1:]]
    predictions = loaded.predict([(r[3], r[4]) for r in rows])
    assert predictions[0].text == (rows[0][3], rows[0][4])
    predicted = [loaded.info.labels.index(p.label) for p in predictions]
    gold = [int(r[0]) for r in rows]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-6)
    assert metrics["f1"] == pytest.approx(f1_score(gold, predicted), abs=1e-6)
    assert metrics["mcc"] == pytest.approx(matthews_corrcoef(gold, predicted), abs=1e-6)
    # A pair's two texts reach the model: swapping in another second text changes the output.
    a, b = loaded.predict([(rows[0][3], rows[0][4]), (rows[0][3], rows[1][4])])
    assert a.probabilities != b.probabilities


def test_bert_pairs_carry_token_types(data, tmp_path):
    """A BERT-family batch of pairs has segment 1 on exactly the second text and its [SEP]."""
    from zoo.dataset import load_task_data, spec_from_config
    from zoo.prepare import batcher_for
    from zoo.tasks import get_task
    from zoo.text import train_tokenizer
    from zoo.train import TrainConfig

    task_data = load_task_data(spec_from_config(TrainConfig(dataset="glue/mrpc",
                                                            data_dir=str(data / "MRPC"))))
    train = task_data.splits["train"]
    tokenizer = train_tokenizer(train.texts + train.pairs, 300)
    model = zoo.build_model("bert-tiny", "classifier")
    batcher = batcher_for(get_task("classification"), train, tokenizer, model, batch_size=4,
                          max_len=64, buckets=(64,))
    batch = batcher.make_batch(np.arange(4))
    sep = tokenizer.token_to_id("[SEP]")
    for row in range(4):
        ids, types = batch.input_ids[row], batch.extras["token_type_ids"][row]
        seps = np.flatnonzero(ids == sep)
        assert len(seps) == 2
        assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:seps[1] + 1] == 1).all()
        assert (types[seps[1] + 1:] == 0).all()  # padding
    # The M2L encoder reads no token types: its batches carry none.
    m2l = batcher_for(get_task("classification"), train, tokenizer,
                      zoo.build_model("encoder-m2l-tiny", "classifier"), batch_size=4,
                      max_len=64, buckets=(64,))
    assert "token_type_ids" not in m2l.make_batch(np.arange(4)).extras


def test_pairs_truncate_longest_first(data):
    """A pair over max_len loses tokens from its longer text first, as HuggingFace does."""
    from zoo.text import encode_texts, train_tokenizer

    tokenizer = train_tokenizer(["a b c d e f g h i j k l"], 50)
    long, short = "a b c d e f g h i j k l", "a b"
    [encoded] = encode_texts(tokenizer, [long], [short], 10)
    assert len(encoded.ids) == 10
    assert encoded.type_ids.count(1) == 3  # "a b [SEP]": the short text is kept whole


def test_regression_spearman_equals_scipy(data, tmp_path, capsys):
    summary = _train(tmp_path / "run", "--model", "encoder-m2l-tiny", "--dataset", "glue/stsb",
                     "--data-dir", str(data / "STS-B"), "--max-steps", "20")
    assert summary["task"] == "regression" and "best_dev_spearman" in summary
    run = tmp_path / "run"
    heldout = data / "STS-B" / "heldout.tsv"
    metrics = _evaluate(run, heldout, capsys)
    assert set(metrics) == {"pearson", "spearman", "loss"}
    rows = [line.split("\t") for line in heldout.read_text().splitlines()[1:]]
    scores = [s.score for s in zoo.load(str(run)).predict([(r[7], r[8]) for r in rows])]
    gold = [float(r[9]) for r in rows]
    assert metrics["spearman"] == pytest.approx(scipy.stats.spearmanr(scores, gold)[0],
                                                abs=1e-5)
    assert metrics["pearson"] == pytest.approx(scipy.stats.pearsonr(scores, gold)[0], abs=1e-4)
    assert metrics["loss"] == pytest.approx(np.mean((np.array(scores) - gold) ** 2), rel=1e-4)
    assert (run / "dev_scatter.png").is_file()


def test_token_classification_entity_f1_equals_seqeval(data, tmp_path, capsys):
    summary = _train(tmp_path / "run", "--model", "encoder-m2l-tiny",
                     "--train-file", str(data / "ner_train.txt"),
                     "--validation-file", str(data / "ner_dev.txt"), "--max-steps", "30",
                     "--max-len", "16")  # short: some sentences are cut, and still scored
    assert summary["task"] == "token-classification"
    run = tmp_path / "run"
    metrics = _evaluate(run, data / "ner_dev.txt", capsys)
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "loss"}
    sentences = [[line.split() for line in block.splitlines()]
                 for block in (data / "ner_dev.txt").read_text().strip().split("\n\n")]
    words = [[w[0] for w in s] for s in sentences]
    gold = [[w[-1] for w in s] for s in sentences]
    tagged = zoo.load(str(run)).predict(words)
    predicted = [t.tags for t in tagged]
    assert max(map(len, words)) > 16  # truncation happened: cut words count as "O"
    assert metrics["f1"] == pytest.approx(seqeval.metrics.f1_score(gold, predicted), abs=1e-9)
    assert metrics["precision"] == pytest.approx(
        seqeval.metrics.precision_score(gold, predicted), abs=1e-9)
    assert metrics["recall"] == pytest.approx(seqeval.metrics.recall_score(gold, predicted),
                                              abs=1e-9)
    # Raw text: entities come with their character spans in the text.
    text = "Peter Blackburn met the European Commission in Brussels ."
    [result] = zoo.load(str(run)).predict([text])
    assert result.words == text.split()
    for entity in result.entities:
        assert text[entity.start:entity.end] == entity.text
    assert (run / "dev_report.txt").read_text().count("micro") == 1


def test_own_csv_with_string_labels(tmp_path, capsys):
    """A CSV of one's own: its column names, three string labels, predictions by name."""
    rng = np.random.default_rng(0)
    words = {"billing": "invoice charge refund payment card", "login": "password account "
             "locked reset sign", "shipping": "parcel delivery late courier tracking"}
    for name, n in (("train.csv", 150), ("dev.csv", 45), ("test.csv", 30)):
        lines = ["ticket_id,body,team"]
        for i in range(n):
            team = list(words)[i % 3]
            body = " ".join(rng.choice(words[team].split(), 4))
            lines.append(f'{i},"Hello, {body}",{team}')
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    summary = _train(tmp_path / "run", "--model", "encoder-m2l-tiny",
                     "--train-file", str(tmp_path / "train.csv"),
                     "--validation-file", str(tmp_path / "dev.csv"),
                     "--test-file", str(tmp_path / "test.csv"),
                     "--text-column", "body", "--label-column", "team", "--max-steps", "40")
    assert summary["labels"] == ["billing", "login", "shipping"]
    # The labelled test file is scored at the end, as evaluate scores it.
    assert summary["test_accuracy"] == pytest.approx(
        _evaluate(tmp_path / "run", tmp_path / "test.csv", capsys)["accuracy"], abs=1e-6)
    assert summary["best_dev_accuracy"] > 0.9  # the words give the team away
    capsys.readouterr()
    assert cli_main(["predict", str(tmp_path / "run"), "--file", str(tmp_path / "dev.csv"),
                     "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["label"] in {"billing", "login", "shipping"}
    assert first["text"].startswith("Hello, ")
    assert cli_main(["predict", str(tmp_path / "run"), "--file", str(tmp_path / "dev.csv"),
                     "--json", "--precision", "bf16"]) == 0
    low = json.loads(capsys.readouterr().out.splitlines()[0])
    assert low["label"] == first["label"] and low["text"] == first["text"]
    assert low["probability"] == pytest.approx(first["probability"], abs=0.02)
    # The bare model directory knows its columns too (kept in its manifest).
    assert _evaluate(tmp_path / "run" / "model", tmp_path / "dev.csv", capsys) == \
        _evaluate(tmp_path / "run", tmp_path / "dev.csv", capsys)


def test_evaluate_or_predict_during_training_names_the_process(data, tmp_path, capsys):
    """A run folder being trained (locked, no model yet) is named as such."""
    from zoo.fsutil import FolderLock

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "zoo-run/1", "model":
                                                 "encoder-m2l-tiny", "head": "classifier"}))
    with FolderLock(run):
        assert cli_main(["evaluate", str(run), "--data-file",
                         str(data / "MRPC" / "heldout.tsv")]) == 2
        err = capsys.readouterr().err
        assert "being trained by process" in err and str(run) in err
        assert cli_main(["predict", str(run), "a text"]) == 2
        err = capsys.readouterr().err
        assert "being trained by process" in err and str(run) in err


def test_lone_surrogate_is_named(data, tmp_path):
    _train(tmp_path / "run", "--model", "encoder-m2l-tiny", "--dataset", "glue/mrpc",
           "--data-dir", str(data / "MRPC"), "--max-steps", "2")
    model = zoo.load(str(tmp_path / "run"))
    with pytest.raises(zoo.errors.InvalidArgumentError, match=r"texts\[1\].*surrogate"):
        model.predict([("fine", "film"), ("\ud800 film", "x")])
