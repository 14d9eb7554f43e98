"""Regression: one float per text or pair (e.g. STS-B's 0-5 similarity).

Loss: mean squared error. Metrics: Pearson correlation exactly over a split (from sums that
merge across batches) and, per split, Spearman's rank correlation (from the collected
scores). The best checkpoint is the one with the highest dev Spearman.
"""


import dataclasses
import json
from pathlib import Path
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics

from zoo.tasks.base import Task, head_forward, pearson, spearman, weighted_mean
from zoo.tasks.classification import _shown


@flax.struct.dataclass
class Pearson(metrics.Metric):
    """Pearson correlation from centred running statistics of the unmasked rows: count,
    means, sums of squared deviations and of co-deviations, merged with Chan et al.'s
    pairwise update (raw float32 power sums would cancel for scores far from zero)."""

    stats: jax.Array  # (6,): n, mean_x, mean_y, m2_x, m2_y, c_xy

    @classmethod
    def empty(cls) -> "Pearson":
        return cls(stats=jnp.zeros(6, jnp.float32))

    @classmethod
    def from_model_output(cls, scores, targets, mask, **_) -> "Pearson":
        w = mask.astype(jnp.float32)
        x, y = scores.astype(jnp.float32), targets.astype(jnp.float32)
        n = w.sum()
        safe = jnp.maximum(n, 1.0)
        mx, my = (w * x).sum() / safe, (w * y).sum() / safe
        dx, dy = (x - mx) * w, (y - my) * w
        return cls(stats=jnp.stack([n, mx, my, (dx * dx).sum(), (dy * dy).sum(),
                                    (dx * dy).sum()]))

    def merge(self, other: "Pearson") -> "Pearson":
        na, mxa, mya, xxa, yya, xya = self.stats
        nb, mxb, myb, xxb, yyb, xyb = other.stats
        n = na + nb
        share = jnp.where(n > 0, nb / jnp.maximum(n, 1.0), 0.0)
        dx, dy = mxb - mxa, myb - mya
        cross = na * share  # na * nb / n
        return type(self)(stats=jnp.stack([
            n, mxa + dx * share, mya + dy * share, xxa + xxb + dx * dx * cross,
            yya + yyb + dy * dy * cross, xya + xyb + dx * dy * cross]))

    def reduce(self) -> "Pearson":
        if self.stats.ndim == 1:
            return self
        total = type(self)(stats=self.stats[0])
        for row in self.stats[1:]:
            total = total.merge(type(self)(stats=row))
        return total

    def compute(self):
        n, _, _, xx, yy, xy = (float(v) for v in np.asarray(self.stats, np.float64))
        if n < 2 or xx <= 0 or yy <= 0:
            return 0.0
        return xy / np.sqrt(xx * yy)


@flax.struct.dataclass
class RegressionMetrics(metrics.Collection):
    pearson: Pearson
    loss: metrics.Average.from_output("loss")


@dataclasses.dataclass(frozen=True)
class Score:
    text: str | tuple[str, str]
    score: float

    def row(self) -> str:
        return f"{self.score:.4f}\t{_shown(self.text)}"


class Regression(Task):
    name = "regression"
    hf_class = "ForSequenceClassification"
    hf_problem_type = "regression"
    head = "regressor"
    metrics = RegressionMetrics
    best_metric = "spearman"
    higher_is_better = True
    label_kind = "score"
    collect = ("scores",)

    def head_size(self, label_names) -> int:
        return 1

    def forward(self, model, batch, key):
        scores = head_forward(model, batch, key)[:, 0]
        targets = batch["labels"].astype(jnp.float32)
        per_example = (scores - targets) ** 2
        update = RegressionMetrics.single_from_model_output(
            scores=scores, targets=targets, loss=per_example, mask=batch["weights"] > 0)
        return weighted_mean(per_example, batch["weights"]), update, {"scores": scores}

    def finalize(self, collected, reference, labels) -> dict[str, float]:
        scores = np.asarray(collected["scores"], np.float64)
        return {"spearman": spearman(scores, np.asarray(reference, np.float64))}

    def predict_outputs(self, head_outputs, attention_mask):
        return head_outputs[:, 0]

    def decode(self, items, outputs, model, encodings) -> list[Score]:
        return [Score(item, float(value)) for item, value in zip(items, outputs)]

    def report(self, run_dir, collected, reference, labels: Sequence[str] | None, title: str
               ) -> dict:
        return score_report(run_dir, collected["scores"], reference, title)


def score_report(run_dir, scores, reference, title: str, what: str | None = None) -> dict:
    """Pearson, Spearman and MSE of predicted against gold scores; with ``run_dir``, the
    dev report (text, JSON) and a scatter plot. ``what`` says what the scores are."""
    scores = np.asarray(scores, np.float64)
    targets = np.asarray(reference, np.float64)
    summary = {"examples": int(len(scores)), "pearson": pearson(scores, targets),
               "spearman": spearman(scores, targets),
               "mse": float(np.mean((scores - targets) ** 2)) if len(scores) else 0.0}
    if run_dir is not None:
        from zoo.fsutil import atomic_write_text

        lines = [title, "", *([what, ""] if what else []),
                 f"{'examples':>10}  {summary['examples']}"]
        lines += [f"{k:>10}  {summary[k]:.4f}" for k in ("pearson", "spearman", "mse")]
        atomic_write_text(Path(run_dir) / "dev_report.txt", "\n".join(lines) + "\n")
        atomic_write_text(Path(run_dir) / "dev_report.json", json.dumps(summary, indent=2) + "\n")
        _scatter(scores, targets, title, Path(run_dir) / "dev_scatter.png")
    return {"dev_pearson": summary["pearson"], "dev_spearman": summary["spearman"]}


def _scatter(scores: np.ndarray, targets: np.ndarray, title: str, out_png: Path) -> None:
    """Predicted against gold scores, the diagonal drawn for reference."""
    from zoo.fsutil import atomic_file
    from zoo.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(targets, scores, s=6, alpha=0.5)
    if len(targets):
        low, high = float(min(targets.min(), scores.min())), float(max(targets.max(),
                                                                        scores.max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlabel("gold score")
    ax.set_ylabel("predicted score")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_file(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
