"""Devices, meshes and shardings: how a model and its batches are laid out on jax's SPMD engine.

One process or many, one device or a few hundred, the trainer runs the same jitted step; what
changes is where arrays live, and that is decided here from configuration:

* ``--mesh data=N[,model=M]`` names a 2-D device mesh (default: every device on ``data``).
  Each batch is split along ``data``; parameters are replicated, except that when ``model``
  is more than 1 they are split along ``model`` by the **partition rules** of the model's
  config (``config.partition_rules``, kept beside each family's modeling code, plus the heads'
  rules): ``(regex over the parameter path, axis name or None per dimension)``. Optimizer
  state follows its parameter. XLA's partitioner inserts only what the layout needs: the
  gradient all-reduce for data parallelism, gathers of sharded weights for the ``model`` axis.
* Several processes (hosts): ``initialize_distributed`` calls ``jax.distributed.initialize``
  from the usual environment; every process builds the same global batch plan and hands in
  only its rows (``local_rows``), assembled with ``jax.make_array_from_process_local_data``.
* ``to_host`` brings (possibly sharded, possibly non-addressable) arrays back as NumPy on every
  process, for exports and reports.

Nothing here knows a family, a weight format or a task.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from zoo.errors import InvalidArgumentError

DATA, MODEL = "data", "model"
AXES = (DATA, MODEL)
# (regex searched in the "/"-joined parameter path, one mesh axis name or None per dimension)
PartitionRules = Sequence[tuple[str, tuple[str | None, ...]]]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the ``data`` and ``model`` axes; ``data=None`` takes the devices left over."""

    data: int | None = None
    model: int = 1

    def sizes(self, device_count: int) -> tuple[int, int]:
        """(data, model) for ``device_count`` devices, or a one-line error naming ``--mesh``."""
        data = self.data if self.data is not None else device_count // self.model
        if data < 1 or data * self.model != device_count:
            raise InvalidArgumentError(
                f"--mesh {self}: data x model must equal the {device_count} device(s) jax sees "
                f"({jax.default_backend()}); e.g. --mesh data={device_count}")
        return data, self.model

    def __str__(self) -> str:
        return f"data={'auto' if self.data is None else self.data},model={self.model}"


def parse_mesh(spec: str | None) -> MeshConfig:
    """``"data=8"``, ``"data=4,model=2"``, ``"model=2"`` or None/"" (all devices on data)."""
    if spec is None or not str(spec).strip():
        return MeshConfig()
    sizes: dict[str, int] = {}
    for part in str(spec).split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name not in AXES or name in sizes or not value.strip().isdigit() \
                or int(value) < 1:
            raise InvalidArgumentError(
                f"--mesh {spec!r}: expected data=N[,model=M] with positive integers "
                f"(axes: {', '.join(AXES)})")
        sizes[name] = int(value)
    return MeshConfig(sizes.get(DATA), sizes.get(MODEL, 1))


def make_mesh(config: MeshConfig | str | None = None, devices: Sequence[Any] | None = None,
              explicit: bool = False) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default: all of every process).

    ``explicit=False`` gives ``Auto`` axes: jit propagates shardings from its inputs, which is
    what the trainer wants. ``explicit=True`` gives jax's explicit-sharding mode, where every
    array's type carries its sharding; the zoo's models run under both.
    """
    if not isinstance(config, MeshConfig):
        config = parse_mesh(config)
    devices = list(jax.devices() if devices is None else devices)
    data, model = config.sizes(len(devices))
    kind = AxisType.Explicit if explicit else AxisType.Auto
    grid = np.asarray(devices, dtype=object).reshape(data, model)
    return Mesh(grid, AXES, axis_types=(kind, kind))


def data_size(mesh: Mesh) -> int:
    return int(mesh.shape[DATA])


# ------------------------------------------------------------------------------ parameters


def spec_for(path: str, shape: Sequence[int], rules: PartitionRules, mesh: Mesh) -> P:
    """The first rule whose regex is found in ``path``; dimensions a named axis does not
    divide evenly stay whole (replicated). No rule: replicated."""
    for pattern, axes in rules:
        if re.search(pattern, path):
            if len(axes) != len(shape):
                raise ValueError(f"partition rule {pattern!r} gives {len(axes)} axes for "
                                 f"{path} of shape {tuple(shape)}")
            fitted = [a if a is None or dim % mesh.shape[a] == 0 else None
                      for a, dim in zip(axes, shape)]
            return P(*fitted)
    return P()


def key_path(keys) -> str:
    """A jax key path as the zoo's "/"-joined name (``encoder/blocks/0/attention/key/kernel``);
    the ``.value`` of an NNX variable is not part of the name."""
    parts = []
    for k in keys:
        if isinstance(k, jax.tree_util.GetAttrKey):
            if k.name != "value":
                parts.append(k.name)
        else:
            parts.append(str(getattr(k, "key", getattr(k, "idx", k))))
    return "/".join(parts)


def param_shardings(state, mesh: Mesh, rules: PartitionRules):
    """A tree like ``state`` (an ``nnx.State`` of parameters) of ``NamedSharding``s."""
    def one(keys, leaf):
        return NamedSharding(mesh, spec_for(key_path(keys), np.shape(leaf), rules, mesh))
    return jax.tree_util.tree_map_with_path(one, state)


def follower_shardings(state, params, param_sharding_tree, mesh: Mesh):
    """Shardings for a tree whose leaves shadow parameters (optimizer moments): a leaf takes
    the sharding of the parameter whose path ends its own path and whose shape it has;
    everything else (step counters, scalars) is replicated."""
    by_path = {}
    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_shard = jax.tree.leaves(param_sharding_tree,
                                 is_leaf=lambda x: isinstance(x, NamedSharding))
    for (keys, leaf), sharding in zip(flat_params, flat_shard):
        by_path[key_path(keys)] = (np.shape(leaf), sharding)
    replicated = NamedSharding(mesh, P())

    def one(keys, leaf):
        path = key_path(keys)
        parts = path.split("/")
        for i in range(len(parts)):
            hit = by_path.get("/".join(parts[i:]))
            if hit is not None and hit[0] == np.shape(leaf):
                return hit[1]
        return replicated
    return jax.tree_util.tree_map_with_path(one, state)


def place(tree, shardings):
    """``tree`` put on devices per ``shardings`` (same structure); works across processes
    when every process holds the same full values (parameters at start-up)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(one, tree, shardings)


# ------------------------------------------------------------------------------ batches


def batch_sharding(mesh: Mesh, rows: int) -> NamedSharding:
    """Rows split along ``data`` when they divide evenly, else replicated (small eval batches)."""
    spec = P(DATA) if rows % data_size(mesh) == 0 else P()
    return NamedSharding(mesh, spec)


def check_batch_size(batch_size: int, mesh: Mesh, flag: str = "--batch-size") -> None:
    """The global batch must split evenly over the ``data`` axis and over the processes."""
    for parts, what in ((data_size(mesh), "the data axis of --mesh"),
                        (jax.process_count(), "the processes")):
        if batch_size % parts:
            raise InvalidArgumentError(
                f"{flag} {batch_size} does not split evenly over {what} ({parts}); use a "
                f"multiple of {parts}")


def local_rows(rows: int, sharding: NamedSharding) -> slice:
    """The rows of a ``rows``-row global batch that this process feeds (all of them when the
    batch is replicated or there is one process)."""
    if sharding.spec == P() or jax.process_count() == 1:
        return slice(0, rows)
    index_map = sharding.addressable_devices_indices_map((rows,))
    starts = sorted({(idx[0].start or 0, idx[0].stop or rows) for idx in index_map.values()})
    first, last = starts[0][0], starts[-1][1]
    return slice(first, last)


def global_batch(arrays: Mapping[str, np.ndarray], mesh: Mesh, local: bool = False
                 ) -> dict[str, jax.Array]:
    """Global arrays split along ``data``, each process contributing its rows.

    ``arrays`` is the whole global batch (every process builds the same one and hands in only
    its rows), or with ``local=True`` just this process's rows (a stream that reads only its
    share), in process order.
    """
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    processes = jax.process_count()
    rows = next(iter(arrays.values())).shape[0] * (processes if local else 1)
    sharding = batch_sharding(mesh, rows)  # every field of a batch has the same rows
    if processes == 1:  # one transfer of the whole batch: this runs at every step
        return jax.device_put(arrays, sharding)
    mine = slice(None) if local else local_rows(rows, sharding)
    return {name: jax.make_array_from_process_local_data(sharding, value[mine],
                                                         (rows, *value.shape[1:]))
            for name, value in arrays.items()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# ------------------------------------------------------------------------------ host side


def to_host(tree):
    """Every leaf as a NumPy array on every process (gathering what other processes hold)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)
    return jax.tree.map(one, tree)


def is_primary() -> bool:
    """True in the process that writes files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------ several hosts

ENV_HINT = ("set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID in "
            "every process (or run under SLURM / on Cloud TPU, which jax detects)")


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` from the environment, once, before any device use.

    With ``JAX_COORDINATOR_ADDRESS`` set, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` must be
    set too (``JAX_LOCAL_DEVICE_IDS`` optionally); without it jax auto-detects SLURM jobs,
    Open MPI and Cloud TPU pods. On CPU the processes talk through gloo collectives.
    """
    if jax.distributed.is_initialized():
        return
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
    if explicit:
        for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            value = os.environ.get(name, "")
            if not value.isdigit():
                raise InvalidArgumentError(f"--distributed: {name}={value!r} is not a "
                                           f"non-negative integer; {ENV_HINT}")
    try:
        if explicit:
            jax.distributed.initialize(
                coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                process_id=int(os.environ["JAX_PROCESS_ID"]))
        else:
            jax.distributed.initialize()
    except (ValueError, RuntimeError) as err:
        raise InvalidArgumentError(f"--distributed: jax.distributed.initialize failed "
                                   f"({str(err).splitlines()[0][:200]}); {ENV_HINT}") from None
