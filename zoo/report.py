"""Readable results: one summary format shared by the trainer and the baseline.

The original tutorial printed its final report with the wrong labels and could be pointed
at GLUE's unlabelled test split; here every summary is computed from the labels it is given
and refuses labels < 0 (GLUE's test split carries -1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, log_loss

from zoo.errors import ZooError
from zoo.fsutil import atomic_file, atomic_write_text



class MetricsLogError(ZooError, ValueError):
    """A metrics log (``metrics.jsonl``) is malformed; the message names the file and line."""


# Keys of a metrics log line that are coordinates or bookkeeping, not metrics.
_NON_METRIC_KEYS = frozenset({"step", "split", "epoch", "time"})


def _as_labels(values: Sequence[int] | np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """Integer labels in [0, num_classes), or a ValueError saying what is wrong."""
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    if (labels < 0).any():
        raise ValueError(
            f"{name} holds negative labels ({int((labels < 0).sum())} of {labels.size}): "
            "an unlabelled split (GLUE test uses -1) cannot be scored"
        )
    if (labels >= num_classes).any():
        raise ValueError(f"{name} holds class ids >= {num_classes} (the number of label names)")
    return labels


def classification_summary(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
    probabilities: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class scores and the confusion matrix as plain JSON-ready values.

    ``probabilities`` (n, num_classes), when given, adds the log loss. Raises ValueError on
    negative true labels so that an unlabelled split is never reported as scored.
    """
    names = [str(name) for name in label_names]
    num_classes = len(names)
    true = _as_labels(y_true, "y_true", num_classes)
    pred = _as_labels(y_pred, "y_pred", num_classes)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    if true.size == 0:
        raise ValueError("cannot summarise an empty set of predictions")

    class_ids = list(range(num_classes))
    report_args = dict(labels=class_ids, target_names=names, zero_division=0)
    report = classification_report(true, pred, output_dict=True, **report_args)
    per_class = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in names
    }
    summary: dict[str, Any] = {
        "n": int(true.size),
        "accuracy": float((true == pred).mean()),
        "label_names": names,
        "per_class": per_class,
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "confusion_matrix": confusion_matrix(true, pred, labels=class_ids).tolist(),
        "report_text": classification_report(true, pred, digits=4, **report_args),
    }
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.shape != (true.size, num_classes):
            raise ValueError(
                f"probabilities must have shape {(true.size, num_classes)}, got {probs.shape}"
            )
        summary["log_loss"] = float(log_loss(true, probs, labels=class_ids))
    return summary


def _aligned_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    return "\n".join(line(cells) for cells in [header, *rows])


def format_summary(summary: dict[str, Any], title: str) -> str:
    """A report a person reads: title, accuracy, sklearn's per-class text, confusion matrix."""
    names = summary["label_names"]
    matrix = summary["confusion_matrix"]
    lines = [title, "=" * len(title), f"n = {summary['n']}   accuracy = {summary['accuracy']:.4f}"]
    if "log_loss" in summary:
        lines[-1] += f"   log loss = {summary['log_loss']:.4f}"
    header = ["true \\ predicted", *names]
    rows = [[name, *(str(count) for count in counts)] for name, counts in zip(names, matrix)]
    lines += ["", summary["report_text"].rstrip(), "", "Confusion matrix (rows: true, columns: predicted)"]
    lines.append(_aligned_table(header, rows))
    return "\n".join(lines) + "\n"


def _pyplot():
    """pyplot on the Agg backend, so that reports work on headless machines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_confusion(summary: dict[str, Any], title: str, out_png: Path) -> None:
    plt = _pyplot()
    names = summary["label_names"]
    matrix = np.asarray(summary["confusion_matrix"])
    size = 1.2 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, labels=names)
    ax.set_yticks(ticks, labels=names)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"{title}\naccuracy {summary['accuracy']:.4f}, n = {summary['n']}")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=color)
    fig.tight_layout()
    with atomic_file(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_report(
    out_dir: Path | str,
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
    prefix: str = "dev",
    title: str | None = None,
    *,
    probabilities: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write ``{prefix}_report.txt``, ``{prefix}_report.json`` and ``{prefix}_confusion.png``."""
    summary = classification_summary(y_true, y_pred, label_names, probabilities)
    title = title or f"{prefix} set"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{prefix}_report.txt", format_summary(summary, title))
    atomic_write_text(out / f"{prefix}_report.json", json.dumps(summary, indent=2) + "\n")
    _plot_confusion(summary, title, out / f"{prefix}_confusion.png")
    return summary


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_metrics(metrics_jsonl: Path) -> list[dict[str, Any]]:
    """Parse a JSONL metrics log; blank lines are skipped, anything else malformed is an error."""
    records = []
    with open(metrics_jsonl, encoding="utf-8", errors="replace") as lines:  # bad bytes: bad JSON
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{metrics_jsonl}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MetricsLogError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise MetricsLogError(
                    f"{where}: expected a JSON object, got {type(record).__name__}")
            if not _is_number(record.get("step")) or not isinstance(record.get("split"), str):
                raise MetricsLogError(f"{where}: needs a numeric 'step' and a string 'split'")
            records.append(record)
    if not records:
        raise MetricsLogError(f"{metrics_jsonl}: no metrics records")
    return records


def plot_curves(metrics_jsonl: Path | str, out_png: Path | str) -> Path:
    """Plot every metric of a training log against step: losses left, the other metrics right.

    One line per (split, metric), so train and dev curves of the same metric sit together;
    the metric names are read from the log (e.g. ``accuracy`` or ``masked_accuracy``).
    """
    metrics_jsonl, out_png = Path(metrics_jsonl), Path(out_png)
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for record in _read_metrics(metrics_jsonl):
        for key, value in record.items():
            if key not in _NON_METRIC_KEYS and _is_number(value):
                series.setdefault((record["split"], key), []).append((record["step"], value))

    plt = _pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for (split, key), points in sorted(series.items()):
        steps, values = zip(*sorted(points))
        ax = loss_ax if "loss" in key else metric_ax
        ax.plot(steps, values, marker="o" if len(points) < 50 else None, markersize=3,
                label=f"{split} {key}")
    for ax, ylabel in ((loss_ax, "loss"), (metric_ax, "accuracy / other metrics")):
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(metrics_jsonl.name)
    fig.tight_layout()
    with atomic_file(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return out_png


def _format_cell(value: Any) -> str:
    """4 decimals for fractions in [0, 1] (accuracy-like), 3 significant digits otherwise."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if 0.0 <= value <= 1.0:
            return f"{value:.4f}"
        if 1.0 <= abs(value) < 1e6:
            digits = math.floor(math.log10(abs(value))) + 1
            return f"{round(value, 3 - digits):.{max(0, 3 - digits)}f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub-flavoured Markdown table; numeric columns are right-aligned, missing cells empty."""
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    numeric = [
        any(_is_number(row.get(column)) for row in rows)
        and all(row.get(column) is None or _is_number(row.get(column)) for row in rows)
        for column in columns
    ]
    lines = [
        "| " + " | ".join(_format_cell(str(column)) for column in columns) + " |",
        "|" + "|".join("---:" if is_numeric else "---" for is_numeric in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_format_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)
