"""Sequence classification: one text or a pair -> one of N named classes.

Loss: softmax cross-entropy. Metrics (exact over a split, from a confusion matrix that
merges across batches): accuracy, F1 (binary: of the positive class 1; more classes: macro
over the classes seen), Matthews correlation (the multi-class form scikit-learn uses).
"""


import dataclasses
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics

from zoo.tasks.base import Task, head_forward, weighted_mean


@flax.struct.dataclass
class Confusion(metrics.Metric):
    """A (true class x predicted class) count matrix over the unmasked examples."""

    counts: jax.Array

    @classmethod
    def empty(cls) -> "Confusion":
        return cls(counts=jnp.zeros((0, 0), jnp.float32))

    @classmethod
    def from_model_output(cls, logits, labels, mask, **_) -> "Confusion":
        classes = logits.shape[-1]
        truth = jax.nn.one_hot(labels, classes, dtype=jnp.float32) * mask[:, None]
        predicted = jax.nn.one_hot(jnp.argmax(logits, -1), classes, dtype=jnp.float32)
        return cls(counts=truth.T @ predicted)

    def merge(self, other: "Confusion") -> "Confusion":
        if self.counts.size == 0:
            return other
        if other.counts.size == 0:
            return self
        return type(self)(counts=self.counts + other.counts)

    def reduce(self) -> "Confusion":
        return type(self)(counts=self.counts.sum(0)) if self.counts.ndim == 3 else self

    def compute(self):
        return confusion_f1(np.asarray(self.counts))


@flax.struct.dataclass
class F1(Confusion):
    def compute(self):
        return confusion_f1(np.asarray(self.counts))


@flax.struct.dataclass
class MCC(Confusion):
    def compute(self):
        return confusion_mcc(np.asarray(self.counts))


def confusion_f1(counts: np.ndarray) -> float:
    """Binary: F1 of class 1; more classes: the mean F1 over classes that occur (true or
    predicted), as scikit-learn's ``f1_score(average="macro")``."""
    if counts.size == 0:
        return 0.0
    counts = counts.astype(np.float64)
    tp = np.diag(counts)
    fp, fn = counts.sum(0) - tp, counts.sum(1) - tp
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)
    if counts.shape[0] == 2:
        return float(f1[1])
    present = denominator > 0
    return float(f1[present].mean()) if present.any() else 0.0


def confusion_mcc(counts: np.ndarray) -> float:
    """Matthews correlation from a confusion matrix (0 when a side is constant)."""
    if counts.size == 0:
        return 0.0
    counts = counts.astype(np.float64)
    true_sums, predicted_sums = counts.sum(1), counts.sum(0)
    n, correct = counts.sum(), np.trace(counts)
    covariance = correct * n - true_sums @ predicted_sums
    spread = (n * n - predicted_sums @ predicted_sums) * (n * n - true_sums @ true_sums)
    return float(covariance / np.sqrt(spread)) if spread > 0 else 0.0


@flax.struct.dataclass
class ClassificationMetrics(metrics.Collection):
    accuracy: metrics.Accuracy
    f1: F1
    mcc: MCC
    loss: metrics.Average.from_output("loss")


@dataclasses.dataclass(frozen=True)
class Prediction:
    text: str | tuple[str, str]
    label: str
    probability: float  # of the predicted label
    probabilities: dict[str, float]

    def row(self) -> str:
        return f"{self.label}\t{self.probability:.4f}\t{_shown(self.text)}"


def _shown(text) -> str:
    """A text, or a pair as its two texts separated by a tab, for one output line."""
    return text if isinstance(text, str) else "\t".join(text)


def cross_entropy_update(logits, labels, weights, metrics_type=None):
    """(loss, metrics update) of softmax cross-entropy over the unmasked rows."""
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    update = (metrics_type or ClassificationMetrics).single_from_model_output(
        logits=logits, labels=labels, loss=per_example, mask=weights > 0)
    return weighted_mean(per_example, weights), update


class Classification(Task):
    name = "classification"
    hf_class = "ForSequenceClassification"
    hf_problem_type = "single_label_classification"
    head = "classifier"
    metrics = ClassificationMetrics
    best_metric = "accuracy"
    higher_is_better = True
    has_classes = True
    label_kind = "class"
    collect = ("logits",)

    def forward(self, model, batch, key):
        logits = head_forward(model, batch, key)
        loss, update = cross_entropy_update(logits, batch["labels"], batch["weights"])
        return loss, update, {"logits": logits}

    def predict_outputs(self, head_outputs, attention_mask):
        return jax.nn.softmax(head_outputs, -1)

    def decode(self, items, outputs, model, encodings) -> list[Prediction]:
        labels = model.info.labels
        return [Prediction(item, labels[int(p.argmax())], float(p.max()),
                           {label: float(x) for label, x in zip(labels, p)})
                for item, p in zip(items, outputs)]

    def report(self, run_dir, collected, reference, labels: Sequence[str] | None, title: str
               ) -> dict:
        from zoo.report import classification_summary, write_report

        logits = np.stack(collected["logits"]) if collected["logits"] else np.zeros((0, 2))
        y_true = np.asarray(reference, np.int64)
        names = list(labels)
        if run_dir is None:
            summary = classification_summary(y_true, logits.argmax(-1), names)
        else:
            summary = write_report(run_dir, y_true, logits.argmax(-1), names, prefix="dev",
                                   title=title)
        return {"dev_accuracy": summary["accuracy"]}
