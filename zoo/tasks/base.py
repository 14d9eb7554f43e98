"""What every task shares: the ``Task`` interface, its registry, and small numeric helpers.

A task owns everything that differs between kinds of training: the head a fresh model gets,
the loss and the ``clu.metrics`` collection (``forward``), the label types it reads from a
dataset, the metrics only a whole split can give (``finalize``: Spearman correlation,
entity F1...), how outputs become predictions, and its report. The trainer, ``predict``,
``evaluate`` and distillation ask the task; none of them compares a kind string.

A new task is one module defining a ``Task`` subclass plus one ``register_task(...)`` line
(in ``zoo/tasks/__init__.py``'s import list).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics
from flax import nnx

from zoo.errors import UnknownNameError

IGNORE = -100  # a label that takes no part in loss or metrics (sub-word pieces, padding)


class Task:
    """How to train, score and read one kind of head.

    Subclasses set the class attributes and override what differs. Ad-hoc tasks (e.g.
    distillation's) can be built directly: ``Task("distill", Metrics, "accuracy", True, fn)``.
    """

    name: str = ""
    head: str | None = None       # the registered head a fresh model for this task gets
    metrics: type[metrics.Collection] | None = None
    best_metric: str = "loss"     # the dev metric that picks the best checkpoint
    higher_is_better: bool = False
    has_classes: bool = False     # the head predicts one of named classes (labels kept)
    label_kind: str | None = None  # "class" | "score" | "tags": what a dataset's label is
    labels_optional: bool = False  # examples without labels train too (a dataset's label
    #                                column is then read only where it is present)
    needs_pairs: bool = False      # every example is two texts (a dataset needs a pair column)
    # Outputs the evaluator keeps per real example for ``finalize`` (host-side, whole split).
    collect: tuple[str, ...] = ()
    eval_task: "Task | None" = None
    # Export (zoo.export): what an ONNX graph calls the head's output, and the transformers
    # task-model class suffix it is written as ("Model": the bare encoder; None: not written).
    output_name: str = "logits"
    hf_class: str | None = None
    hf_problem_type: str | None = None

    def __init__(self, name: str | None = None, metrics: type | None = None,
                 best_metric: str | None = None, higher_is_better: bool | None = None,
                 forward: Callable | None = None, *, eval_task: "Task | None" = None):
        if name is not None:
            self.name = name
        if metrics is not None:
            self.metrics = metrics
        if best_metric is not None:
            self.best_metric = best_metric
        if higher_is_better is not None:
            self.higher_is_better = higher_is_better
        if forward is not None:
            self.forward = forward  # an instance attribute: called as forward(model, batch, key)
        if eval_task is not None:
            self.eval_task = eval_task

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # -- training ------------------------------------------------------------------

    def bind(self, masking=None, **context) -> "Task":
        """This task configured by what the data preparation found (e.g. the masked-LM task
        needs its mask id; ``data``: a labelled run's ``zoo.dataset.TaskData``); tasks that
        need nothing return themselves."""
        return self

    def forward(self, model, batch: Mapping[str, jax.Array], key) -> tuple[jax.Array, Any, dict]:
        """(model, batch, dropout key | None) -> (loss, metrics update, outputs)."""
        raise NotImplementedError(f"task {self.name!r} does not train")

    @property
    def for_eval(self) -> "Task":
        return self.eval_task or self

    def better(self, new: float, old: float | None) -> bool:
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old

    def finalize(self, collected: Mapping[str, list], reference: Any, labels: Sequence[str] | None
                 ) -> dict[str, float]:
        """Metrics only a whole split gives, from the ``collect`` outputs of every real example
        (lists in example order) and the split's ``reference`` (gold labels)."""
        return {}

    # -- data ----------------------------------------------------------------------

    def encode_examples(self, tokenizer, examples, max_len: int) -> tuple[list, Any]:
        """(``zoo.text.Encoded`` per example, labels as the batcher takes them) of a split
        (``zoo.dataset.Examples``): texts, or text pairs, with one label per example."""
        from zoo.text import encode_texts

        return encode_texts(tokenizer, examples.texts, examples.pairs, max_len), examples.labels

    def prepare_scores(self, values: list[float], declared: tuple[float, float] | None,
                       where: Sequence[str]) -> list[float]:
        """A split's scores as this task trains on them (``label_kind == "score"``), given the
        range the dataset declares for them (e.g. GLUE STS-B: 0-5), if any; ``where[i]``
        names row i for messages. Regression keeps the scores as they are."""
        return values

    def output_shape(self, batch: int, length: int, config, size: int | None) -> tuple:
        """The shape of the head's outputs for (batch, length) token ids (``size``: the
        head's output count)."""
        return (batch, size)

    def head_size(self, label_names: Sequence[str] | None) -> int | None:
        """The head's output count for these label names (None: the head needs none)."""
        return len(label_names) if self.has_classes and label_names else None

    # -- inference -------------------------------------------------------------------

    def encode_items(self, tokenizer, items: Sequence, max_len: int) -> list:
        """Items (texts or ``(text, pair)`` tuples) as ``zoo.text.Encoded`` examples."""
        from zoo.errors import InvalidArgumentError
        from zoo.text import encode_texts

        pairs = [isinstance(item, (tuple, list)) for item in items]
        if any(pairs) and not all(pairs):
            raise InvalidArgumentError("mix of single texts and (text, pair) tuples: give "
                                       "all items in one form")
        if not any(pairs):
            return encode_texts(tokenizer, items, None, max_len)
        for i, item in enumerate(items):
            if len(item) != 2:
                raise InvalidArgumentError(f"texts[{i}] has {len(item)} parts; a pair is "
                                           "(text, text_pair)")
        return encode_texts(tokenizer, [a for a, _ in items], [b for _, b in items], max_len)

    def predict_outputs(self, head_outputs: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """What ``predict`` keeps of a forward (inside jit): probabilities, scores..."""
        return head_outputs

    def decode(self, items: Sequence, outputs: list, model, encodings) -> list:
        """Predictions for the given items from ``predict_outputs`` rows."""
        raise NotImplementedError(f"task {self.name!r} makes no predictions")

    # -- reports ---------------------------------------------------------------------

    def report(self, run_dir, collected: Mapping[str, list], reference: Any,
               labels: Sequence[str] | None, title: str) -> dict:
        """Write the task's dev report files into ``run_dir`` (None: write nothing); returns
        the figures for ``summary.json``."""
        return {}


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if not task.name:
        raise ValueError("a task needs a name")
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name in _TASKS:
        return _TASKS[name]
    close = difflib.get_close_matches(str(name), list(_TASKS), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown task {name!r}{hint} (known: {', '.join(sorted(_TASKS))})")


def task_names() -> list[str]:
    return sorted(_TASKS)


def task_for(name: str, masking=None, **context) -> Task:
    """The registered task ``name`` (a head's ``kind``), bound to ``context`` (see ``bind``;
    ``masking`` is the masked-LM task's, ignored by the others)."""
    return get_task(name).bind(masking=masking, **context)


# ------------------------------------------------------------------------------ helpers


def rngs_for(key) -> nnx.Rngs | None:
    return None if key is None else nnx.Rngs(dropout=key)


def head_forward(model, batch, key) -> jax.Array:
    """The model's head outputs (float32) for a batch, token types passed where present."""
    outputs = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                    rngs=rngs_for(key))
    return outputs.astype(jnp.float32)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as Spearman's correlation needs)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    # Group equal values; each group gets the mean of the positions it spans.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (no linear relation to measure)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return 0.0
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))
