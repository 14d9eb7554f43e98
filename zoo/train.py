"""One generic trainer for any registered head (classification or masked-LM).

Fast by design: length buckets keep padding low and the number of compiled shapes
bounded; steps are pure ``jax.jit`` functions over ``nnx.split`` states (no per-call NNX
graph walk); dropout draws 16 random bits per element, not a float. Safe by design: an orbax
``latest`` checkpoint at every evaluation and on Ctrl-C, the ``best`` by the task's
metric, and ``resume`` that continues bit for bit (data order and dropout keys are pure
functions of the seed and the step).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import optax
from flax import nnx

from zoo import checkpoint
from zoo.batching import BucketBatcher
from zoo.model import ZooModel, in_training_mode
from zoo.tasks import MaskingConfig, Task, task_for


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``config.json`` in the run directory)."""

    model: str = "encoder-m2l-small"
    head: str = "sst2"
    pretrained: bool = False
    weights: str | None = None
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs when set
    time_limit: float | None = None  # seconds of training after which the run stops early
    batch_size: int = 32
    optimizer: str = "adamw"  # "adamw" (warm-up + decay) or "adam" (the seed's constant adam)
    learning_rate: float | None = None  # None: the model's fine-tuning default (see resolve)
    schedule: str = "linear"  # "linear" | "cosine" | "constant" (after warm-up)
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    dropout: float | None = None  # None: the preset's
    eval_every: int = 500
    seed: int = 0
    max_len: int | None = None  # None: the model's
    buckets: tuple[int, ...] | None = None
    dropout_prng: str = "threefry2x32"  # or "rbg" (faster on GPU, slower on CPU here)
    data_dir: str | None = None
    text_file: str | None = None  # MLM only: pre-train on this file's lines instead of SST-2
    vocab_size: int | None = None  # of a tokenizer trained here; None: the model's

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self) -> "TrainConfig":
        """A copy with every model-dependent default filled in (what ``config.json`` records).

        The learning rate defaults to the preset's ``finetune_defaults`` when training starts
        from pre-trained weights (about 5e-5 for BERT-family encoders), else 1e-3.
        """
        from zoo.registry import get_encoder

        if self.learning_rate is not None:
            return self
        defaults = get_encoder(self.model).finetune_defaults
        start_trained = bool(self.pretrained or self.weights)
        lr = defaults.get("learning_rate", 1e-3) if start_trained else 1e-3
        return dataclasses.replace(self, learning_rate=lr)


# ------------------------------------------------------------------------------ optimizer


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping + AdamW with warm-up and decay; ``adam`` is the seed's recipe."""
    cfg = cfg.resolved()
    if cfg.optimizer == "adam":
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(cfg.learning_rate))
    if cfg.optimizer != "adamw":
        raise ValueError(f"optimizer must be 'adamw' or 'adam', not {cfg.optimizer!r}")
    warmup = max(1, int(cfg.warmup_fraction * total_steps))
    decay_steps = max(1, total_steps - warmup)
    after = {
        "linear": optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps),
        "cosine": optax.cosine_decay_schedule(cfg.learning_rate, decay_steps),
        "constant": optax.constant_schedule(cfg.learning_rate),
    }
    if cfg.schedule not in after:
        raise ValueError(f"schedule must be one of {sorted(after)}, not {cfg.schedule!r}")
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, warmup), after[cfg.schedule]], [warmup]
    )

    def decay_mask(params):  # no weight decay on biases and LayerNorm scales
        return jax.tree.map(lambda p: p.ndim > 1, params)

    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask),
    )


# ------------------------------------------------------------------------------ steps


def batch_arrays(batch) -> dict[str, np.ndarray]:
    """The device-side fields of a ``Batch`` (indices stay on the host)."""
    return {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "labels": batch.labels,
        "weights": batch.weights,
    }


class Evaluator:
    """A jitted, dropout-free forward of ``task`` over exact evaluation batches."""

    def __init__(self, model: ZooModel, task: Task):
        was_training = in_training_mode(model)
        model.eval()
        self.graph, _ = nnx.split(model)
        if was_training:
            model.train()
        self.task = task
        self.step = jax.jit(self._step)

    def _step(self, model_state, batch):
        _, update, outputs = self.task.forward(nnx.merge(self.graph, model_state), batch, None)
        return update, outputs

    def run(self, model_state, data: BucketBatcher, collect: bool = False):
        """Metrics over every example once; with ``collect`` also (indices, logits)."""
        total, indices, logits = None, [], []
        for plan in data.eval_plan():
            batch = data.make_batch(plan)
            update, outputs = self.step(model_state, batch_arrays(batch))
            total = update if total is None else total.merge(update)
            if collect and "logits" in outputs:
                real = batch.weights > 0
                indices.append(batch.indices[real])
                logits.append(np.asarray(outputs["logits"])[real])
        metrics = {k: float(v) for k, v in total.compute().items()}
        if collect:
            return metrics, np.concatenate(indices), np.concatenate(logits)
        return metrics


class Steps:
    """Jitted train step over split NNX states, plus the evaluator.

    ``nnx.jit`` would re-walk the module graph in Python on every call; splitting once and
    jitting pure functions of the states removes that overhead, which small models feel.
    """

    def __init__(self, model: ZooModel, optimizer: nnx.Optimizer, task: Task):
        self.evaluator = Evaluator(model, task)
        model.train()
        self.train_graph, self.model_state = nnx.split(model)
        model.eval()
        self.opt_graph, self.opt_state = nnx.split(optimizer)
        self.task = task
        self.train = jax.jit(self._train, donate_argnums=(0, 1))

    def _train(self, model_state, opt_state, batch, key):
        model = nnx.merge(self.train_graph, model_state)
        optimizer = nnx.merge(self.opt_graph, opt_state)

        def loss_fn(model):
            loss, update, _ = self.task.forward(model, batch, key)
            return loss, update

        (_, update), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return nnx.state(model), nnx.state(optimizer), update

    def model(self) -> ZooModel:
        """The current parameters as an eval-mode model."""
        return nnx.merge(self.evaluator.graph, self.model_state)

    def compiled_shapes(self) -> int:
        """How many programs the train step has compiled (bounded by the bucket count)."""
        return self.train._cache_size()


# ------------------------------------------------------------------------------ the trainer


@dataclasses.dataclass
class Progress:
    step: int = 0
    best: float | None = None
    best_step: int | None = None
    train_seconds: float = 0.0


class Trainer:
    """Trains ``model`` on batchers built by the caller; writes everything under ``run_dir``."""

    def __init__(self, model: ZooModel, cfg: TrainConfig, run_dir: Path,
                 train_data: BucketBatcher, eval_data: BucketBatcher,
                 masking: MaskingConfig | None = None, show_progress: bool = True):
        self.cfg = cfg = cfg.resolved()
        self.run_dir = Path(run_dir).resolve()
        self.train_data, self.eval_data = train_data, eval_data
        self.task = task_for(model.info.head_kind, masking)
        self.steps_per_epoch = train_data.steps_per_epoch
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        self.optimizer = nnx.Optimizer(model, make_optimizer(cfg, self.total_steps), wrt=nnx.Param)
        self.steps = Steps(model, self.optimizer, self.task)
        self.base_key = jax.random.key(cfg.seed, impl=cfg.dropout_prng)
        self.progress = Progress()
        self.show_progress = show_progress
        self._managers: dict[str, Any] = {}

    # -- checkpoints ---------------------------------------------------------------

    def _manager(self, kind: str):
        import orbax.checkpoint as ocp

        if kind not in self._managers:
            self._managers[kind] = ocp.CheckpointManager(
                self.run_dir / "checkpoints" / kind,
                options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
            )
        return self._managers[kind]

    def save(self, kind: str) -> None:
        import orbax.checkpoint as ocp

        tree = {
            "model": checkpoint.unflatten(checkpoint.state_values(self.steps.model_state)),
            "optimizer": checkpoint.unflatten(checkpoint.state_values(self.steps.opt_state)),
        }
        manager = self._manager(kind)
        manager.save(
            self.progress.step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(jax.tree.map(np.asarray, tree)),
                progress=ocp.args.JsonSave(dataclasses.asdict(self.progress)),
            ),
            force=True,
        )
        manager.wait_until_finished()

    def restore(self, kind: str = "latest") -> bool:
        """Load the ``kind`` checkpoint into the trainer; False when there is none."""
        import orbax.checkpoint as ocp

        manager = self._manager(kind)
        step = manager.latest_step()
        if step is None:
            return False
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), progress=ocp.args.JsonRestore()))
        where = f"checkpoint {manager.directory}/{step}"
        for name, state in (("model", self.steps.model_state), ("optimizer", self.steps.opt_state)):
            found = checkpoint.flatten(restored["state"][name])
            checkpoint.check_tree(checkpoint.state_values(state), found, source=where)
            checkpoint.fill_state(state, found)
        self.progress = Progress(**restored["progress"])
        return True

    # -- evaluation ----------------------------------------------------------------

    def evaluate(self, data: BucketBatcher | None = None, collect: bool = False):
        """Exact metrics over every example; with ``collect``, also (indices, logits)."""
        return self.steps.evaluator.run(self.steps.model_state, data or self.eval_data, collect)

    # -- training ------------------------------------------------------------------

    def batches_from(self, step: int) -> Iterator[tuple[int, Any]]:
        """(global step, batch) from ``step`` on: order is a pure function of seed and epoch."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        while step < self.total_steps:
            plan = self.train_data.epoch_plan(epoch, self.cfg.seed)
            for indices in plan[offset:]:
                if step >= self.total_steps:
                    return
                yield step, self.train_data.make_batch(indices)
                step += 1
            epoch, offset = epoch + 1, 0

    def fit(self, resume: bool = False, log=None) -> Progress:
        """Train to ``total_steps`` (or the time limit); evaluate, log and checkpoint as set."""
        from zoo.logs import MetricsLog

        if resume and not self.restore("latest"):
            raise FileNotFoundError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        log = log or MetricsLog(self.run_dir)
        bar = _progress_bar(self.total_steps, self.progress.step, self.show_progress)
        train_metrics, started = None, time.perf_counter() - self.progress.train_seconds
        try:
            for step, batch in self.batches_from(self.progress.step):
                key = jax.random.fold_in(self.base_key, step)
                self.steps.model_state, self.steps.opt_state, update = self.steps.train(
                    self.steps.model_state, self.steps.opt_state, batch_arrays(batch), key)
                train_metrics = update if train_metrics is None else train_metrics.merge(update)
                self.progress.step = step + 1
                self.progress.train_seconds = time.perf_counter() - started
                bar.update(1)
                at_epoch_end = self.progress.step % self.steps_per_epoch == 0
                at_end = self.progress.step >= self.total_steps
                over_time = (self.cfg.time_limit is not None
                             and self.progress.train_seconds >= self.cfg.time_limit)
                if self.progress.step % self.cfg.eval_every == 0 or at_epoch_end or at_end \
                        or over_time:
                    train_values = {k: float(v) for k, v in train_metrics.compute().items()}
                    train_metrics = None
                    dev_values = self.evaluate()
                    bar.set_postfix({f"train_{k}": f"{v:.3f}" for k, v in train_values.items()}
                                    | {f"dev_{k}": f"{v:.3f}" for k, v in dev_values.items()})
                    self._record(log, train_values, dev_values)
                    started = time.perf_counter() - self.progress.train_seconds  # skip eval time
                if over_time:
                    break
        except KeyboardInterrupt:
            bar.close()
            log.close()
            try:
                self.save("latest")
            except RuntimeError as err:  # interrupted inside a step: its inputs were donated
                warnings.warn(f"interrupted mid-step ({err}); the latest checkpoint is the one "
                              "saved at the last evaluation")
            raise
        bar.close()
        log.close()
        return self.progress

    def _record(self, log, train_values: dict, dev_values: dict) -> None:
        step = self.progress.step
        epoch = step / self.steps_per_epoch
        common = {"step": step, "epoch": round(epoch, 4), "time": round(self.progress.train_seconds, 2)}
        log.write({**common, "split": "train", **train_values})
        log.write({**common, "split": "dev", **dev_values})
        value = dev_values[self.task.best_metric]
        if self.task.better(value, self.progress.best):
            self.progress.best, self.progress.best_step = value, step
            self.save("best")
        self.save("latest")

    # -- results -------------------------------------------------------------------

    def best_model(self) -> ZooModel:
        """The model at the best checkpoint (the current one if none was saved)."""
        self.restore("best")
        return self.steps.model()


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                dynamic_ncols=True, desc="train")
