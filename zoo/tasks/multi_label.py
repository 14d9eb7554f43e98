"""Multi-label classification: one text or a pair -> any subset of N named labels.

What transformers calls ``problem_type: multi_label_classification`` (e.g. emotions in
GoEmotions, toxicity types): the classifier head of single-label classification, read with a
sigmoid per label instead of a softmax over labels. Loss: binary cross-entropy with logits,
averaged over labels and examples (as transformers' ``BCEWithLogitsLoss``). A label is
predicted when its probability is at least ``THRESHOLD``.

Metrics, exact over a split from per-label counts that merge across batches: micro-F1 (over
every (example, label) decision; the best checkpoint's metric), macro-F1 (the mean over the
labels that occur, true or predicted, as scikit-learn's ``f1_score(average="macro")`` over
those), and exact match (the share of examples whose predicted set is the gold set).

A dataset's label per example is a list of label names or ids (JSON, JSONL, Parquet, hub
``Sequence(ClassLabel)`` columns) or, in CSV / TSV, one string of them separated by commas;
an empty list or string is an example with no label.
"""

# (no ``from __future__ import annotations``: clu reads the Collection's field types)
import dataclasses
import json
from pathlib import Path
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics

from zoo.tasks.base import Task, head_forward, weighted_mean
from zoo.tasks.classification import _shown

THRESHOLD = 0.5  # a label is predicted when sigmoid(logit) >= THRESHOLD, i.e. logit >= 0


@flax.struct.dataclass
class LabelCounts(metrics.Metric):
    """Per label: true positives, false positives, false negatives (C, 3); and (exact
    matches, examples), over the unmasked examples."""

    counts: jax.Array
    exact: jax.Array

    @classmethod
    def empty(cls) -> "LabelCounts":
        return cls(counts=jnp.zeros((0, 3), jnp.float32), exact=jnp.zeros(2, jnp.float32))

    @classmethod
    def from_model_output(cls, logits, labels, mask, **_) -> "LabelCounts":
        w = mask.astype(jnp.float32)[:, None]
        truth = labels.astype(jnp.float32) > 0.5
        predicted = logits >= 0.0
        tp = (truth & predicted).astype(jnp.float32) * w
        fp = (~truth & predicted).astype(jnp.float32) * w
        fn = (truth & ~predicted).astype(jnp.float32) * w
        counts = jnp.stack([tp.sum(0), fp.sum(0), fn.sum(0)], axis=-1)
        same = jnp.all(truth == predicted, axis=-1).astype(jnp.float32) * w[:, 0]
        return cls(counts=counts, exact=jnp.stack([same.sum(), w.sum()]))

    def merge(self, other: "LabelCounts") -> "LabelCounts":
        if self.counts.size == 0:
            return other
        if other.counts.size == 0:
            return self
        return type(self)(counts=self.counts + other.counts, exact=self.exact + other.exact)

    def reduce(self) -> "LabelCounts":
        if self.counts.ndim == 3:
            return type(self)(counts=self.counts.sum(0), exact=self.exact.sum(0))
        return self

    def compute(self):
        return micro_f1(np.asarray(self.counts))


@flax.struct.dataclass
class MicroF1(LabelCounts):
    def compute(self):
        return micro_f1(np.asarray(self.counts))


@flax.struct.dataclass
class MacroF1(LabelCounts):
    def compute(self):
        return macro_f1(np.asarray(self.counts))


@flax.struct.dataclass
class ExactMatch(LabelCounts):
    def compute(self):
        matched, n = (float(v) for v in np.asarray(self.exact, np.float64))
        return matched / n if n > 0 else 0.0


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)


def micro_f1(counts: np.ndarray) -> float:
    """F1 over every (example, label) decision: from the summed counts."""
    if counts.size == 0:
        return 0.0
    tp, fp, fn = counts.astype(np.float64).sum(0)
    return float(_f1(tp, fp, fn))


def macro_f1(counts: np.ndarray) -> float:
    """The mean per-label F1 over the labels that occur (true or predicted)."""
    if counts.size == 0:
        return 0.0
    tp, fp, fn = counts.astype(np.float64).T
    present = (tp + fp + fn) > 0
    return float(_f1(tp, fp, fn)[present].mean()) if present.any() else 0.0


@flax.struct.dataclass
class MultiLabelMetrics(metrics.Collection):
    f1: MicroF1
    f1_macro: MacroF1
    exact_match: ExactMatch
    loss: metrics.Average.from_output("loss")


@dataclasses.dataclass(frozen=True)
class LabelSet:
    text: str | tuple[str, str]
    labels: tuple[str, ...]      # the labels at or above the threshold, most probable first
    scores: tuple[float, ...]    # their probabilities
    probabilities: dict[str, float]

    def row(self) -> str:
        shown = ",".join(f"{label}:{p:.4f}" for label, p in zip(self.labels, self.scores))
        return f"{shown or '(none)'}\t{_shown(self.text)}"


class MultiLabelClassification(Task):
    name = "multi-label-classification"
    hf_class = "ForSequenceClassification"
    hf_problem_type = "multi_label_classification"
    head = "multi-label-classifier"
    metrics = MultiLabelMetrics
    best_metric = "f1"
    higher_is_better = True
    has_classes = True
    label_kind = "classes"
    collect = ("logits",)

    def forward(self, model, batch, key):
        logits = head_forward(model, batch, key)
        targets = batch["labels"].astype(jnp.float32)
        per_example = optax.sigmoid_binary_cross_entropy(logits, targets).mean(-1)
        update = MultiLabelMetrics.single_from_model_output(
            logits=logits, labels=targets, loss=per_example, mask=batch["weights"] > 0)
        return weighted_mean(per_example, batch["weights"]), update, {"logits": logits}

    def predict_outputs(self, head_outputs, attention_mask):
        return jax.nn.sigmoid(head_outputs)

    def decode(self, items, outputs, model, encodings) -> list[LabelSet]:
        names = model.info.labels
        out = []
        for item, p in zip(items, outputs):
            chosen = [int(i) for i in np.argsort(-p, kind="stable") if p[i] >= THRESHOLD]
            out.append(LabelSet(item, tuple(names[i] for i in chosen),
                                tuple(float(p[i]) for i in chosen),
                                {label: float(x) for label, x in zip(names, p)}))
        return out

    def report(self, run_dir, collected, reference, labels: Sequence[str] | None, title: str
               ) -> dict:
        names = list(labels or ())
        logits = np.stack(collected["logits"]) if collected["logits"] \
            else np.zeros((0, len(names)))
        truth = np.asarray(reference, np.float64).reshape(len(logits), -1) > 0.5
        summary = multi_label_summary(truth, logits >= 0.0, names)
        if run_dir is not None:
            write_multi_label_report(Path(run_dir), summary, title)
        return {"dev_f1": summary["f1_micro"], "dev_f1_macro": summary["f1_macro"],
                "dev_exact_match": summary["exact_match"]}


def multi_label_summary(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str]
                        ) -> dict:
    """Per-label precision, recall, F1 and support, and the micro / macro / exact-match
    figures, of boolean (examples, labels) arrays."""
    tp = (truth & predicted).sum(0).astype(np.float64)
    fp = (~truth & predicted).sum(0).astype(np.float64)
    fn = (truth & ~predicted).sum(0).astype(np.float64)
    counts = np.stack([tp, fp, fn], -1)
    per_label = []
    for i, name in enumerate(names):
        precision = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else 0.0
        recall = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else 0.0
        per_label.append({"label": name, "precision": float(precision),
                          "recall": float(recall), "f1": float(_f1(tp[i], fp[i], fn[i])),
                          "support": int(tp[i] + fn[i])})
    exact = float(np.all(truth == predicted, axis=-1).mean()) if len(truth) else 0.0
    return {"examples": int(len(truth)), "f1_micro": micro_f1(counts),
            "f1_macro": macro_f1(counts), "exact_match": exact, "labels": per_label}


def write_multi_label_report(run_dir: Path, summary: dict, title: str) -> None:
    """``dev_report.txt`` (a per-label table) and ``dev_report.json``."""
    from zoo.fsutil import atomic_write_text

    width = max([len("label"), *(len(row["label"]) for row in summary["labels"])])
    lines = [title, "", f"{'label':<{width}}  precision  recall     f1  support"]
    for row in summary["labels"]:
        lines.append(f"{row['label']:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}"
                     f"  {row['f1']:.4f}  {row['support']:7d}")
    lines += ["", f"examples     {summary['examples']}", f"micro F1     {summary['f1_micro']:.4f}",
              f"macro F1     {summary['f1_macro']:.4f}",
              f"exact match  {summary['exact_match']:.4f}"]
    atomic_write_text(run_dir / "dev_report.txt", "\n".join(lines) + "\n")
    atomic_write_text(run_dir / "dev_report.json", json.dumps(summary, indent=2) + "\n")
