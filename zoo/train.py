"""One generic trainer for any registered head (classification or masked-LM): the loop.

Fast by design: length buckets keep padding low and the number of compiled shapes
bounded; steps are pure ``jax.jit`` functions over ``nnx.split`` states (no per-call NNX
graph walk); dropout draws 16 random bits per element, not a float. Safe by design: an orbax
``latest`` checkpoint at every evaluation and on Ctrl-C, the ``best`` by the task's
metric, and ``resume`` that continues bit for bit (data order and dropout keys are pure
functions of the seed and the step).

This module owns the loop (``Trainer``, ``Progress``); its parts live beside it and are
re-exported here, so ``from zoo.train import X`` works for each of them:
``zoo.train_config`` (``TrainConfig`` and its validation), ``zoo.optim`` (the optimizer),
``zoo.steps`` (the jitted train and evaluation steps) and ``zoo.durability`` (checksums,
signals, crash-test hooks).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np
from flax import nnx

from zoo import checkpoint, sharding
from zoo.batching import BucketBatcher
from zoo.durability import (  # noqa: F401  (re-exported: zoo.train's public names)
    _CRASH_AT,
    _PAUSE_AT,
    CHECKSUMS,
    ORBAX_TMP,
    Signals,
    Terminated,
    _crash_hook,
    _Signals,
    clean_uncommitted,
    committed_steps,
    verify_step_checksums,
    write_step_checksums,
)
from zoo.errors import InvalidArgumentError, ZooError
from zoo.model import ZooModel
from zoo.nn import set_precision
from zoo.optim import make_optimizer
from zoo.steps import Evaluator, Steps, batch_arrays  # noqa: F401  (re-exported)
from zoo.tasks import MaskingConfig, Task, task_for
from zoo.train_config import (  # noqa: F401  (re-exported)
    FLAGS,
    OPTIMIZERS,
    PRNGS,
    SCHEDULES,
    TrainConfig,
    _is_int,
    _is_real,
    validate_config,
)


class TrainingDivergedError(ZooError, FloatingPointError):
    """The training loss became NaN or infinite; no checkpoint of that state is written."""


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
        self._signals = Signals()
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
        """Exact metrics over every example; with ``collect``, also the collected outputs."""
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
