"""zoo.report: numbers match a hand computation, unlabelled splits are refused, files are real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zoo.report import classification_summary, format_summary, markdown_table, plot_curves, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["negative", "positive"]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
Y_PRED = np.array([0, 0, 1, 0, 1, 1, 0, 0, 1, 1])


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC)


def test_summary_matches_numpy():
    summary = classification_summary(Y_TRUE, Y_PRED, NAMES)
    assert summary["n"] == 10
    assert summary["accuracy"] == pytest.approx(np.mean(Y_TRUE == Y_PRED))
    # Row true=1, column predicted=0: positives called negative.
    assert summary["confusion_matrix"][1][0] == np.sum((Y_TRUE == 1) & (Y_PRED == 0)) == 2
    assert np.sum(summary["confusion_matrix"]) == 10
    precision_pos = np.sum((Y_PRED == 1) & (Y_TRUE == 1)) / np.sum(Y_PRED == 1)
    assert summary["per_class"]["positive"]["precision"] == pytest.approx(precision_pos)
    assert summary["per_class"]["negative"]["support"] == 4
    json.dumps(summary)  # plain values only


def test_summary_log_loss_from_probabilities():
    probs = np.where(Y_PRED[:, None] == np.arange(2), 0.8, 0.2)
    summary = classification_summary(Y_TRUE, Y_PRED, NAMES, probabilities=probs)
    expected = -np.mean(np.log(probs[np.arange(10), Y_TRUE]))
    assert summary["log_loss"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="shape"):
        classification_summary(Y_TRUE, Y_PRED, NAMES, probabilities=probs[:, :1])


@pytest.mark.parametrize("y_true", [[-1, -1, -1], [0, 1, -1]])
def test_unlabelled_split_is_refused(y_true, tmp_path):
    with pytest.raises(ValueError, match="negative labels"):
        classification_summary(y_true, [0, 1, 0], NAMES)
    with pytest.raises(ValueError, match="negative labels"):
        write_report(tmp_path, y_true, [0, 1, 0], NAMES)
    assert not list(tmp_path.iterdir())


def test_mismatched_or_out_of_range_labels_are_refused():
    with pytest.raises(ValueError, match="y_pred has"):
        classification_summary([0, 1], [0, 1, 1], NAMES)
    with pytest.raises(ValueError, match=">= 2"):
        classification_summary([0, 1], [0, 2], NAMES)


def test_format_summary_has_report_and_labelled_matrix():
    text = format_summary(classification_summary(Y_TRUE, Y_PRED, NAMES), "dev set")
    assert text.startswith("dev set\n=======")
    assert "accuracy = 0.7000" in text
    assert "precision" in text and "recall" in text
    matrix_lines = text.rstrip().splitlines()[-3:]
    assert matrix_lines[0].split()[-2:] == NAMES
    assert matrix_lines[1].split() == ["negative", "3", "1"]
    assert matrix_lines[2].split() == ["positive", "2", "4"]
    assert len(matrix_lines[1]) == len(matrix_lines[2])  # aligned


def test_write_report_files(tmp_path):
    out = tmp_path / "run"
    summary = write_report(out, Y_TRUE, Y_PRED, NAMES, prefix="dev", title="toy")
    assert (out / "dev_report.txt").read_text().startswith("toy\n")
    assert json.loads((out / "dev_report.json").read_text()) == summary
    assert_png(out / "dev_confusion.png")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_plot_curves(tmp_path):
    records = [{"step": s, "split": "train", "loss": 1 / s, "accuracy": 0.5 + s / 1000, "epoch": 1,
                "time": s / 10} for s in range(10, 110, 10)]
    records += [{"step": s, "split": "dev", "loss": 1.2 / s, "accuracy": 0.5 + s / 1200}
                for s in (50, 100)]
    log = write_jsonl(tmp_path / "metrics.jsonl", records)
    out = plot_curves(log, tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    assert_png(out)


def test_plot_curves_mlm_metric_names(tmp_path):
    records = [{"step": s, "split": "train", "loss": 5 - s / 100, "masked_accuracy": s / 1000}
               for s in (100, 200, 300)]
    log = write_jsonl(tmp_path / "mlm.jsonl", records)
    assert_png(plot_curves(log, tmp_path / "mlm.png"))


@pytest.mark.parametrize("bad_line", ["{not json", "[1, 2]", '{"split": "train", "loss": 1.0}'])
def test_plot_curves_names_malformed_line(tmp_path, bad_line):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "split": "train", "loss": 1.0}\n\n' + bad_line + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 3"):
        plot_curves(log, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_markdown_table_shape_and_formatting():
    rows = [
        {"model": "tfidf-logreg", "dev_accuracy": 0.81651, "train_seconds": 12.3456, "params": 4011906},
        {"model": "encoder|v1", "dev_accuracy": 0.8, "train_seconds": 1234.5},
    ]
    columns = ["model", "dev_accuracy", "train_seconds", "params"]
    lines = markdown_table(rows, columns).splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert lines[1] == "|---|---:|---:|---:|"
    cells = [[cell.strip() for cell in line[1:-1].split(" | ")] for line in lines]
    assert cells[0] == columns
    assert cells[2] == ["tfidf-logreg", "0.8165", "12.3", "4011906"]
    assert cells[3] == ["encoder\\|v1", "0.8000", "1230", ""]
    with pytest.raises(ValueError):
        markdown_table(rows, [])
