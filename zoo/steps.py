"""The jitted steps: the training step over split NNX states laid out on a device mesh
(``Steps``) and the dropout-free evaluator (``Evaluator``), fed by ``batch_arrays``.

Steps are pure ``jax.jit`` functions over ``nnx.split`` states (no per-call NNX graph walk);
batches come split along the mesh's ``data`` axis, so training is data-parallel SPMD on one
device or many.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from zoo import sharding
from zoo.batching import BucketBatcher
from zoo.model import ZooModel, in_training_mode
from zoo.nn import compiler_options
from zoo.tasks import Task


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
        self.labels = model.info.labels
        self.mesh = mesh if mesh is not None else sharding.make_mesh()
        self.compiler_options = compiler_options(model)  # Steps' train step shares them
        self.step = jax.jit(self._step, compiler_options=self.compiler_options)

    def _step(self, model_state, batch):
        _, update, outputs = self.task.forward(nnx.merge(self.graph, model_state), batch, None)
        return update, outputs

    def run(self, model_state, data: BucketBatcher, collect: bool = False):
        """Metrics over every example once: the task's ``clu`` metrics, plus its whole-split
        metrics (``Task.finalize``) when the split carries its gold labels
        (``data.reference``). With ``collect``: (metrics, the task's ``collect`` outputs as
        lists in example order)."""
        keys = self.task.collect
        total, indices, kept = None, [], {k: [] for k in keys}
        for plan in data.eval_plan():
            batch = data.make_batch(plan)
            update, outputs = self.step(model_state,
                                        sharding.global_batch(batch_arrays(batch), self.mesh))
            total = update if total is None else total.merge(update)
            if keys:
                real = batch.weights > 0
                indices.append(batch.indices[real])
                for k in keys:
                    kept[k].extend(sharding.to_host(outputs[k])[real])
        metrics = {k: float(v) for k, v in total.compute().items()}
        collected = None
        if keys:
            order = np.argsort(np.concatenate(indices), kind="stable")
            collected = {k: [values[i] for i in order] for k, values in kept.items()}
            reference = getattr(data, "reference", None)
            if reference is not None:
                metrics |= self.task.finalize(collected, reference, self.labels)
        return (metrics, collected) if collect else metrics


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
                             compiler_options=self.evaluator.compiler_options,
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
