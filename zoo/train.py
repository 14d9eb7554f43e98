"""One generic trainer for any registered head (classification or masked-LM).

Fast by design: length buckets keep padding low and the number of compiled shapes
bounded; steps are pure ``jax.jit`` functions over ``nnx.split`` states (no per-call NNX
graph walk); dropout draws 16 random bits per element, not a float. Safe by design: an orbax
``latest`` checkpoint at every evaluation and on Ctrl-C, the ``best`` by the task's
metric, and ``resume`` that continues bit for bit (data order and dropout keys are pure
functions of the seed and the step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import numbers
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
import optax
from flax import nnx

from zoo import checkpoint, sharding
from zoo.batching import BucketBatcher
from zoo.errors import ConfigError, InvalidArgumentError, ZooError
from zoo.model import ZooModel, in_training_mode
from zoo.nn import PRECISIONS, set_precision
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
    optimizer: str = "adamw"  # "adamw" (warm-up + decay), "adam" (the seed's constant adam)
    # or "sgd" (momentum 0.9, warm-up + decay)
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
    mesh: str | None = None  # "data=N[,model=M]"; None: every device on the data axis
    precision: str = "float32"  # or "bf16": bf16 compute, float32 parameters and optimizer
    stream: str | None = None  # MLM only: stream this text file or hf:NAME... (not in memory)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validated(self, source: str | None = None) -> "TrainConfig":
        """``self`` after ``validate_config`` (raises on the first out-of-range field)."""
        validate_config(self, source)
        return self

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


# ------------------------------------------------------------------------------ validation

# The command-line flag of each field (fields without one are named as such).
FLAGS = {f: "--" + f.replace("_", "-") for f in (
    "model", "head", "weights", "epochs", "max_steps", "time_limit", "batch_size", "optimizer",
    "schedule", "warmup_fraction", "weight_decay", "dropout", "eval_every", "seed", "max_len",
    "data_dir", "text_file", "mesh", "precision", "stream")} | {"learning_rate": "--lr"}
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("linear", "cosine", "constant")
PRNGS = ("threefry2x32", "rbg", "unsafe_rbg")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_config(cfg: "TrainConfig", source: str | None = None) -> None:
    """Check every field's type and range before any work, naming the flag that is wrong.

    One function for the command line and for ``train_run`` from Python, so both refuse the
    same things (NaN learning rates, dropout 2, zero steps...). With ``source`` (a run's
    ``config.json``) the message names the file and the field instead of the flag, and the
    error is a ``ConfigError``.
    """
    def bad(field: str, must: str):
        value = getattr(cfg, field)
        if source is None:
            raise InvalidArgumentError(f"{FLAGS.get(field, field)} must be {must}, got {value!r}")
        raise ConfigError(f"{source}: {field} must be {must}, got {value!r}")

    def positive_int(field: str, optional: bool = False, minimum: int = 1):
        value = getattr(cfg, field)
        if not (optional and value is None) and not (_is_int(value) and value >= minimum):
            bad(field, f"an integer >= {minimum}")

    def real(field: str, low: float, high: float = math.inf, *, low_open: bool = False,
             high_open: bool = True, optional: bool = False):
        value = getattr(cfg, field)
        if optional and value is None:
            return
        ok = _is_real(value) and math.isfinite(value) \
            and (value > low if low_open else value >= low) \
            and (value < high if high_open else value <= high)
        if not ok:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            span = f"> {low:g}" if high == math.inf and low_open else (
                f">= {low:g}" if high == math.inf else f"in {lo}{low:g}, {high:g}{hi}")
            bad(field, f"a finite number {span}")

    for field in ("model", "head"):
        if not isinstance(getattr(cfg, field), str) or not getattr(cfg, field):
            bad(field, "a registered name")
    for field in ("weights", "data_dir", "text_file", "stream"):
        value = getattr(cfg, field)
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value)):
            bad(field, "a path")
    if not isinstance(cfg.pretrained, bool):
        bad("pretrained", "true or false")
    real("epochs", 0.0, low_open=True)
    positive_int("max_steps", optional=True)
    real("time_limit", 0.0, low_open=True, optional=True)
    positive_int("batch_size")
    if cfg.optimizer not in OPTIMIZERS:
        bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
    real("learning_rate", 0.0, low_open=True, optional=True)
    if cfg.schedule not in SCHEDULES:
        bad("schedule", f"one of {', '.join(SCHEDULES)}")
    real("warmup_fraction", 0.0, 1.0)
    real("weight_decay", 0.0)
    real("clip_norm", 0.0, low_open=True)
    real("dropout", 0.0, 1.0, optional=True)
    positive_int("eval_every")
    if not (_is_int(cfg.seed) and 0 <= cfg.seed < 2**32):
        bad("seed", "an integer in [0, 2**32)")
    positive_int("max_len", optional=True, minimum=2)  # room for [CLS] and [SEP]
    if cfg.buckets is not None and not (
            isinstance(cfg.buckets, (tuple, list)) and cfg.buckets
            and all(_is_int(b) and b >= 1 for b in cfg.buckets)):
        bad("buckets", "a non-empty list of positive lengths")
    if cfg.dropout_prng not in PRNGS:
        bad("dropout_prng", f"one of {', '.join(PRNGS)}")
    positive_int("vocab_size", optional=True, minimum=6)  # more than the 5 special tokens
    if cfg.precision not in PRECISIONS:
        bad("precision", f"one of {', '.join(PRECISIONS)}")
    if cfg.mesh is not None:
        if not isinstance(cfg.mesh, str):
            bad("mesh", "data=N[,model=M]")
        try:
            sharding.parse_mesh(cfg.mesh)
        except InvalidArgumentError:
            bad("mesh", "data=N[,model=M] with positive integers")
    if cfg.stream is not None and cfg.text_file is not None:
        bad("stream", "unset when --text-file is given (one corpus)")


# ------------------------------------------------------------------------------ optimizer


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping + AdamW with warm-up and decay; ``adam`` is the seed's recipe."""
    cfg = cfg.resolved()
    if cfg.optimizer == "adam":
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(cfg.learning_rate))
    if cfg.optimizer not in OPTIMIZERS:
        raise InvalidArgumentError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not "
                                   f"{cfg.optimizer!r}")
    warmup = max(1, int(cfg.warmup_fraction * total_steps))
    decay_steps = max(1, total_steps - warmup)
    after = {
        "linear": optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps),
        "cosine": optax.cosine_decay_schedule(cfg.learning_rate, decay_steps),
        "constant": optax.constant_schedule(cfg.learning_rate),
    }
    if cfg.schedule not in after:
        raise InvalidArgumentError(f"schedule must be one of {sorted(after)}, not {cfg.schedule!r}")
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, warmup), after[cfg.schedule]], [warmup]
    )

    def decay_mask(params):  # no weight decay on biases and LayerNorm scales
        return jax.tree.map(lambda p: p.ndim > 1, params)

    if cfg.optimizer == "sgd":
        return optax.chain(
            optax.clip_by_global_norm(cfg.clip_norm),
            optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
            optax.sgd(schedule, momentum=0.9),
        )

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
        **batch.extras,
    }


class Evaluator:
    """A jitted, dropout-free forward of ``task`` over exact evaluation batches.

    Batches are split along the mesh's ``data`` axis (replicated when their row count does
    not divide evenly); every process feeds its rows and gets the same metrics.
    """

    def __init__(self, model: ZooModel, task: Task, mesh=None):
        was_training = in_training_mode(model)
        model.eval()
        self.graph, _ = nnx.split(model)
        if was_training:
            model.train()
        self.task = task
        self.mesh = mesh if mesh is not None else sharding.make_mesh()
        self.step = jax.jit(self._step)

    def _step(self, model_state, batch):
        _, update, outputs = self.task.forward(nnx.merge(self.graph, model_state), batch, None)
        return update, outputs

    def run(self, model_state, data: BucketBatcher, collect: bool = False):
        """Metrics over every example once; with ``collect`` also (indices, logits)."""
        total, indices, logits = None, [], []
        for plan in data.eval_plan():
            batch = data.make_batch(plan)
            update, outputs = self.step(model_state,
                                        sharding.global_batch(batch_arrays(batch), self.mesh))
            total = update if total is None else total.merge(update)
            if collect and "logits" in outputs:
                real = batch.weights > 0
                indices.append(batch.indices[real])
                logits.append(sharding.to_host(outputs["logits"])[real])
        metrics = {k: float(v) for k, v in total.compute().items()}
        if collect:
            return metrics, np.concatenate(indices), np.concatenate(logits)
        return metrics


class Steps:
    """Jitted train step over split NNX states, laid out on a device mesh, plus the evaluator.

    ``nnx.jit`` would re-walk the module graph in Python on every call; splitting once and
    jitting pure functions of the states removes that overhead, which small models feel.
    The states are placed per ``zoo.sharding`` (parameters by the model's partition rules,
    optimizer state like its parameters); batches come split along ``data``, so the step is
    data-parallel SPMD with one gradient all-reduce, on one device or many.
    """

    def __init__(self, model: ZooModel, optimizer: nnx.Optimizer, task: Task, mesh=None):
        self.mesh = mesh if mesh is not None else sharding.make_mesh()
        self.evaluator = Evaluator(model, task.for_eval, self.mesh)
        model.train()
        self.train_graph, model_state = nnx.split(model)
        model.eval()
        self.opt_graph, opt_state = nnx.split(optimizer)
        rules = getattr(model, "partition_rules", ())
        self.model_shardings = sharding.param_shardings(model_state, self.mesh, rules)
        self.opt_shardings = sharding.follower_shardings(
            opt_state, model_state, self.model_shardings, self.mesh)
        self.model_state = sharding.place(model_state, self.model_shardings)
        self.opt_state = sharding.place(opt_state, self.opt_shardings)
        self.task = task
        replicated = sharding.replicated(self.mesh)
        self.train = jax.jit(self._train, donate_argnums=(0, 1),
                             out_shardings=(self.model_shardings, self.opt_shardings,
                                            replicated, replicated))

    def _train(self, model_state, opt_state, batch, key):
        """One step -> (model state, optimizer state, metrics update, loss); the trainer
        checks the loss of each step for NaN and infinity."""
        model = nnx.merge(self.train_graph, model_state)
        optimizer = nnx.merge(self.opt_graph, opt_state)

        def loss_fn(model):
            loss, update, _ = self.task.forward(model, batch, key)
            return loss, update

        (loss, update), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return nnx.state(model), nnx.state(optimizer), update, loss

    def model(self) -> ZooModel:
        """The current parameters as an eval-mode model."""
        return nnx.merge(self.evaluator.graph, self.model_state)

    def compiled_shapes(self) -> int:
        """How many programs the train step has compiled (bounded by the bucket count)."""
        return self.train._cache_size()


# ------------------------------------------------------------------------------ the trainer

CHECKSUMS = "zoo_checksums.json"  # inside each orbax step folder, written after orbax commits
ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax's marker of a step folder that never committed
# Test hooks (zoo_tests/test_faults.py), read once; unset, they cost one string comparison.
# ZOO_TEST_CRASH_AT=EVENT:N ends the process as SIGKILL would (os._exit, no cleanup) at the
# Nth EVENT: "step" (global step N dispatched), "checkpoint-write" (the Nth save of this
# process: orbax's temporary step folder exists, not yet committed) or "checksums" (orbax
# committed, our checksums not yet written). ZOO_TEST_PAUSE_AT=step:N prints "paused" on
# stderr and sleeps, so a test can signal a trainer at a known point.
_CRASH_AT = os.environ.get("ZOO_TEST_CRASH_AT", "")
_PAUSE_AT = os.environ.get("ZOO_TEST_PAUSE_AT", "")


def _crash_hook(event: str, count: int) -> None:
    if _CRASH_AT and _CRASH_AT == f"{event}:{count}":
        os._exit(137)
    if _PAUSE_AT and _PAUSE_AT == f"{event}:{count}":
        print(f"paused at {event} {count} (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(120)


class TrainingDivergedError(ZooError, FloatingPointError):
    """The training loss became NaN or infinite; no checkpoint of that state is written."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (checkpoint, then exit) but told apart by the caller."""


@dataclasses.dataclass
class Progress:
    step: int = 0
    best: float | None = None
    best_step: int | None = None
    train_seconds: float = 0.0


def clean_uncommitted(directory: Path) -> list[Path]:
    """Remove orbax's uncommitted step folders (a crash mid-write) under ``directory``.

    Only folders orbax itself names ``<step>.orbax-checkpoint-tmp*`` are removed: they are
    never a usable checkpoint, and leaving them makes orbax warn on every later save.
    """
    import shutil

    removed = []
    if directory.is_dir():
        for kind in directory.iterdir():
            for entry in (kind.iterdir() if kind.is_dir() else ()):
                if ORBAX_TMP in entry.name and entry.is_dir():
                    shutil.rmtree(entry)
                    removed.append(entry)
    return removed


def committed_steps(directory: Path) -> list[int]:
    """Steps of ``directory`` (``checkpoints/<kind>``) whose orbax write committed."""
    if not directory.is_dir():
        return []
    return sorted(int(e.name) for e in directory.iterdir() if e.name.isdigit() and e.is_dir())


def write_step_checksums(step_dir: Path) -> None:
    """Record the sha256 of every file of a committed step folder (atomically, beside them)."""
    from zoo.fsutil import atomic_write_text

    sums = checkpoint.file_checksums(step_dir)
    sums.pop(CHECKSUMS, None)
    atomic_write_text(step_dir / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True) + "\n")


def verify_step_checksums(step_dir: Path) -> None:
    """Fail with one line naming the first file of the step folder that does not match.

    A step without a checksums file (written by an older zoo, or a crash in the instant
    between orbax's commit and our record) is accepted with a warning.
    """
    record = step_dir / CHECKSUMS
    if not record.is_file():
        warnings.warn(f"{step_dir} has no {CHECKSUMS}; its files cannot be verified")
        return
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))
    except ValueError:  # JSON and UTF-8 errors alike
        recorded = None
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise checkpoint.IntegrityError(f"{record}: corrupted (not a JSON map of checksums); "
                                        "the checkpoint cannot be trusted")
    found = checkpoint.file_checksums(step_dir)
    found.pop(CHECKSUMS, None)
    for name in sorted(set(recorded) | set(found)):
        if name not in found:
            raise checkpoint.IntegrityError(f"{step_dir / name}: missing (the checkpoint is "
                                            "incomplete)")
        if found[name] != recorded.get(name):
            what = "not part of the checkpoint" if name not in recorded else "checksum mismatch"
            raise checkpoint.IntegrityError(
                f"{step_dir / name}: {what}, the checkpoint is corrupted; restore the file, or "
                "delete this run's checkpoints/ and train again")


class _Signals:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` (``Terminated``), but never inside a
    checkpoint write: a signal that arrives there is held until the write is done, so the
    checkpoint on disk is always whole. Installed only in the main thread; restored on exit.
    """

    def __init__(self):
        self.pending: type[BaseException] | None = None
        self.critical = 0
        self.previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        kind = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if self.critical:
            self.pending = self.pending or kind
        else:
            raise kind()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    @contextlib.contextmanager
    def held(self):
        """Hold signals for the duration of the block; deliver a held one at its end."""
        self.critical += 1
        try:
            yield
        finally:
            self.critical -= 1
        if not self.critical and self.pending is not None:
            kind, self.pending = self.pending, None
            raise kind()


class Trainer:
    """Trains ``model`` on batchers built by the caller; writes everything under ``run_dir``."""

    def __init__(self, model: ZooModel, cfg: TrainConfig, run_dir: Path,
                 train_data: BucketBatcher, eval_data: BucketBatcher,
                 masking: MaskingConfig | None = None, show_progress: bool = True,
                 task: Task | None = None):
        self.cfg = cfg = cfg.validated().resolved()
        self.run_dir = Path(run_dir).resolve()
        self.train_data, self.eval_data = train_data, eval_data
        self.task = task or task_for(model.info.head_kind, masking)  # or a caller's (distill)
        # A streamed corpus (zoo.streaming) may not know its length: then --max-steps counts.
        self.steps_per_epoch = train_data.steps_per_epoch
        if (self.steps_per_epoch is not None and self.steps_per_epoch < 1) or len(eval_data) < 1:
            raise InvalidArgumentError("no training or no evaluation examples: the data is empty")
        if self.steps_per_epoch is None and cfg.max_steps is None:
            raise InvalidArgumentError("the training stream has no known length: pass --max-steps")
        self.total_steps = cfg.max_steps if cfg.max_steps is not None else max(
            1, math.ceil(cfg.epochs * self.steps_per_epoch))
        self.mesh = sharding.make_mesh(cfg.mesh)
        sharding.check_batch_size(cfg.batch_size, self.mesh)
        set_precision(model, cfg.precision)
        self.optimizer = nnx.Optimizer(model, make_optimizer(cfg, self.total_steps), wrt=nnx.Param)
        self.steps = Steps(model, self.optimizer, self.task, self.mesh)
        self.base_key = jax.random.key(cfg.seed, impl=cfg.dropout_prng)
        self.progress = Progress()
        self.show_progress = show_progress
        self._managers: dict[str, Any] = {}
        self._signals = _Signals()
        self._saves = 0
        # Training metrics since the last evaluation: checkpointed too, so a run resumed
        # between two evaluations logs exactly what an uninterrupted one does.
        self._train_metrics = None

    # -- checkpoints ---------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _manager(self, kind: str):
        import orbax.checkpoint as ocp

        if kind not in self._managers:
            if sharding.is_primary():
                clean_uncommitted(self.checkpoint_dir)
            sharding.barrier("zoo-clean-checkpoints")
            self._managers[kind] = ocp.CheckpointManager(
                self.checkpoint_dir / kind,
                options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
                # Known up front, so the saved tree's metadata can be read before restoring.
                item_handlers={"state": ocp.StandardCheckpointHandler(),
                               "progress": ocp.JsonCheckpointHandler()},
            )
        return self._managers[kind]

    def save(self, kind: str) -> None:
        """Write the ``kind`` checkpoint, then its checksums; signals wait until both are done."""
        import orbax.checkpoint as ocp

        tree = {
            "model": checkpoint.unflatten(checkpoint.state_values(self.steps.model_state)),
            "optimizer": checkpoint.unflatten(checkpoint.state_values(self.steps.opt_state)),
        }
        if self._train_metrics is not None:
            tree["train_metrics"] = {str(i): leaf for i, leaf in
                                     enumerate(jax.tree.leaves(self._train_metrics))}
        manager = self._manager(kind)
        if self.progress.step in manager.all_steps():
            return  # this very state is saved already (e.g. Ctrl-C right after an evaluation)
        with self._signals.held():
            self._saves += 1
            manager.save(
                self.progress.step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree),
                    progress=ocp.args.JsonSave(dataclasses.asdict(self.progress)),
                ),
                force=True,
            )
            _crash_hook("checkpoint-write", self._saves)
            manager.wait_until_finished()
            _crash_hook("checksums", self._saves)
            if sharding.is_primary():
                write_step_checksums(Path(manager.directory) / str(self.progress.step))
            sharding.barrier(f"zoo-checksums-{kind}-{self.progress.step}")

    def restore(self, kind: str = "latest") -> bool:
        """Load the ``kind`` checkpoint, checked against its checksums; False when none exists."""
        import orbax.checkpoint as ocp

        manager = self._manager(kind)
        step = manager.latest_step()
        if step is None:
            return False
        step_dir = Path(manager.directory) / str(step)
        verify_step_checksums(step_dir)
        try:
            target = self._restore_target(manager, step)
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), progress=ocp.args.JsonRestore()))
            self.progress = Progress(**restored["progress"])
        except (ValueError, TypeError, KeyError, OSError) as err:  # unverified and unreadable
            raise checkpoint.IntegrityError(
                f"{step_dir}: unreadable checkpoint ({type(err).__name__}: "
                f"{str(err)[:200]})") from err
        where = f"checkpoint {step_dir}"
        for name, state in (("model", self.steps.model_state), ("optimizer", self.steps.opt_state)):
            found = checkpoint.flatten(restored["state"][name])
            checkpoint.check_tree(checkpoint.state_values(state), found, source=where)
            checkpoint.fill_state(state, found)
        pending = restored["state"].get("train_metrics")
        self._train_metrics = None
        if pending is not None:
            structure = jax.tree.structure(self.task.metrics.empty())
            if len(pending) != structure.num_leaves:
                raise checkpoint.CheckpointMismatchError(f"{where}: train_metrics do not fit the "
                                                         f"{self.task.name} task")
            self._train_metrics = jax.tree.unflatten(
                structure, [jax.numpy.asarray(pending[str(i)]) for i in range(len(pending))])
        return True

    def _restore_target(self, manager, step: int) -> dict:
        """The saved tree's shapes and dtypes, each leaf with the sharding it takes here.

        Orbax then reads every array straight into its shards on this mesh, however many
        devices wrote it. Leaves this model lacks, or of another shape, are restored
        replicated, so ``check_tree`` can name them.
        """
        wanted = {}
        for name, state, shards in (("model", self.steps.model_state, self.steps.model_shardings),
                                    ("optimizer", self.steps.opt_state, self.steps.opt_shardings)):
            values = checkpoint.state_values(state, f"{name}/")
            placed = checkpoint.state_values(shards, f"{name}/")
            wanted |= {path: (tuple(np.shape(values[path])), placed[path]) for path in values}
        replicated = sharding.replicated(self.mesh)
        saved = manager.item_metadata(step)["state"]

        def one(keys, meta):
            shape, where = wanted.get(sharding.key_path(keys), (None, replicated))
            if shape != tuple(meta.shape):  # not this model's: check_tree names it
                where = replicated
            return jax.ShapeDtypeStruct(tuple(meta.shape), meta.dtype, sharding=where)
        return jax.tree_util.tree_map_with_path(one, saved)

    def _drop_steps_after(self, step: int) -> None:
        """Remove checkpoints newer than the one resumed from.

        A crash between the ``best`` and the ``latest`` write of one evaluation leaves a
        ``best`` from a future the resumed run will redo (bit for bit); orbax would refuse to
        write that step again, and ``best_model`` must not read ahead of the run.
        """
        for kind in ("best", "latest"):
            manager = self._manager(kind)
            for stale in [s for s in manager.all_steps() if s > step]:
                manager.delete(stale)

    def close(self) -> None:
        """Finish and close the orbax managers (their threads must not outlive the trainer)."""
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()
        if hasattr(self.train_data, "close"):  # a stream's background thread
            self.train_data.close()

    # -- evaluation ----------------------------------------------------------------

    def evaluate(self, data: BucketBatcher | None = None, collect: bool = False):
        """Exact metrics over every example; with ``collect``, also (indices, logits)."""
        return self.steps.evaluator.run(self.steps.model_state, data or self.eval_data, collect)

    # -- training ------------------------------------------------------------------

    def batches_from(self, step: int) -> Iterator[tuple[int, Any]]:
        """(global step, batch) from ``step`` on: order is a pure function of seed and epoch."""
        if hasattr(self.train_data, "batches_from"):  # a stream: it resumes itself
            for step, batch in self.train_data.batches_from(step):
                if step >= self.total_steps:
                    return
                yield step, batch
            return
        epoch, offset = divmod(step, self.steps_per_epoch)
        while step < self.total_steps:
            plan = self.train_data.epoch_plan(epoch, self.cfg.seed)
            for indices in plan[offset:]:
                if step >= self.total_steps:
                    return
                yield step, self.train_data.make_batch(indices, self._rows)
                step += 1
            epoch, offset = epoch + 1, 0

    @functools.cached_property
    def _rows(self) -> slice:
        """The rows of every global training batch that this process builds and feeds."""
        return sharding.local_rows(self.cfg.batch_size,
                                   sharding.batch_sharding(self.mesh, self.cfg.batch_size))

    def _global(self, batch) -> dict:
        """A batch as global arrays split along ``data``, from this process's rows only (the
        in-memory batcher builds just them; a stream reads and tokenises just them)."""
        return sharding.global_batch(batch_arrays(batch), self.mesh, local=True)

    def _check_finite(self, step: int, loss, what: str = "loss") -> None:
        """Stop at the first non-finite training loss, before anything of that state is saved."""
        value = float(loss)
        if math.isfinite(value):
            return
        latest = committed_steps(self.checkpoint_dir / "latest")
        kept = (f"the last good checkpoint (step {latest[-1]}) is kept in "
                f"{self.checkpoint_dir / 'latest'}" if latest else "no checkpoint was saved yet")
        raise TrainingDivergedError(
            f"training diverged at step {step + 1} ({what} {value}); {kept}; lower --lr "
            f"(it is {self.cfg.learning_rate:g}) and train again")

    def fit(self, resume: bool = False, log=None) -> Progress:
        """Train to ``total_steps`` (or the time limit); evaluate, log and checkpoint as set.

        ``resume`` continues from the ``latest`` checkpoint, or from step 0 when the run never
        completed one (a crash during its first checkpoint write). The loss of each step is
        checked while the next one runs, so the check costs no device idle time.
        """
        from zoo.logs import MetricsLog, truncate_metrics

        primary = sharding.is_primary()  # with several processes, process 0 writes the files
        if resume and not self.restore("latest"):
            warnings.warn(f"{self.checkpoint_dir}: no completed checkpoint; starting from step 0")
        if resume:
            self._drop_steps_after(self.progress.step)
            if primary:
                truncate_metrics(self.run_dir / "metrics.jsonl", self.progress.step)
        log = log or (MetricsLog(self.run_dir) if primary else _NoLog())
        bar = _progress_bar(self.total_steps, self.progress.step, self.show_progress and primary)
        started = time.perf_counter() - self.progress.train_seconds
        unchecked = None  # (step, loss) of the last step whose loss was not looked at yet
        with self._signals:
            try:
                for step, batch in self.batches_from(self.progress.step):
                    key = jax.random.fold_in(self.base_key, step)
                    with self._signals.held():  # state, step and metrics change together
                        self.steps.model_state, self.steps.opt_state, update, loss = \
                            self.steps.train(self.steps.model_state, self.steps.opt_state,
                                             self._global(batch), key)
                        self.progress.step = step + 1
                        self._train_metrics = update if self._train_metrics is None \
                            else self._train_metrics.merge(update)
                    if unchecked is not None:
                        self._check_finite(*unchecked)
                    unchecked = (step, loss)
                    _crash_hook("step", step + 1)
                    self.progress.train_seconds = time.perf_counter() - started
                    bar.update(1)
                    at_epoch_end = bool(self.steps_per_epoch) \
                        and self.progress.step % self.steps_per_epoch == 0
                    at_end = self.progress.step >= self.total_steps
                    over_time = (self.cfg.time_limit is not None
                                 and self.progress.train_seconds >= self.cfg.time_limit)
                    if self.progress.step % self.cfg.eval_every == 0 or at_epoch_end or at_end \
                            or over_time:
                        self._check_finite(*unchecked)
                        unchecked = None
                        with self._signals.held():  # evaluated, logged and saved, or none
                            self._evaluate_and_record(log, bar, step)
                        started = time.perf_counter() - self.progress.train_seconds  # skip eval
                    if over_time:
                        break
            except KeyboardInterrupt:
                bar.close()
                log.close()
                self._save_on_interrupt(unchecked)
                raise
            finally:
                bar.close()
                log.close()
        return self.progress

    def _evaluate_and_record(self, log, bar, step: int) -> None:
        train_values = {k: float(v) for k, v in self._train_metrics.compute().items()}
        self._train_metrics = None
        dev_values = self.evaluate()
        for name, value in dev_values.items():
            self._check_finite(step, value, what=f"dev {name}")
        bar.set_postfix({f"train_{k}": f"{v:.3f}" for k, v in train_values.items()}
                        | {f"dev_{k}": f"{v:.3f}" for k, v in dev_values.items()})
        self._record(log, train_values, dev_values)

    def _save_on_interrupt(self, unchecked) -> None:
        """Ctrl-C / SIGTERM: keep the current state as ``latest`` if it is whole and finite."""
        try:
            if unchecked is not None:
                self._check_finite(*unchecked)
            self.save("latest")
        except TrainingDivergedError as err:
            warnings.warn(f"interrupted after the loss diverged; not saved ({err})")
        except RuntimeError as err:  # interrupted inside a step: its inputs were donated
            warnings.warn(f"interrupted mid-step ({err}); the latest checkpoint is the one "
                          "saved at the last evaluation")

    def _record(self, log, train_values: dict, dev_values: dict) -> None:
        step = self.progress.step
        epoch = step / self.steps_per_epoch if self.steps_per_epoch else None
        common = {"step": step, "epoch": None if epoch is None else round(epoch, 4),
                  "time": round(self.progress.train_seconds, 2)}
        log.write({**common, "split": "train", **train_values})
        log.write({**common, "split": "dev", **dev_values})
        value = dev_values[self.task.for_eval.best_metric]
        if self.task.for_eval.better(value, self.progress.best):
            self.progress.best, self.progress.best_step = value, step
            self.save("best")
        self.save("latest")

    # -- results -------------------------------------------------------------------

    def best_model(self) -> ZooModel:
        """The model at the best checkpoint (the current one if none was saved)."""
        self.restore("best")
        return self.steps.model()


class _NoLog:
    """The metrics log of processes other than process 0: they compute, but do not write."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                dynamic_ncols=True, desc="train")
