"""Test fixtures around the original M2L 2022 encoder (``benchmarks.haiku_original``).

The parity tests compare the converted NNX model against that Haiku model. This module
also writes pickles in each format a 2022 training run could have produced,
by registering stand-in modules in ``sys.modules`` while pickling (pickle records the
module path of whatever ``__reduce__`` returns), so those formats are tested without the
2022 library versions.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

# The model itself lives in benchmarks.haiku_original (shared with the benchmark); its names
# are re-exported here so the tests keep using ``haiku_reference.<name>``.
from benchmarks.haiku_original import (  # noqa: F401
    Embeddings,
    EncoderBlock,
    MultiheadAttention,
    PositionwiseFeedForward,
    TrainingState,
    TransformerEncoder,
    build_haiku_model,
    classifier_head,
    dropout,
    layer_norm,
    make_training_state,
    mask_3d,
    mlm_head,
    positional_encoding,
    random_params,
)


# ------------------------------------------------------------------- 2022-format pickles

# variant -> (jax wrapper module, wrapper name, aval state has named_shape, numpy module)
PICKLE_VARIANTS = {
    "jax-0.3.25": ("jax._src.device_array", "reconstruct_device_array", True,
                   "numpy.core.multiarray"),
    "jax-0.3.13-plain-numpy": (None, None, False, "numpy.core.multiarray"),
    "jax-0.4.20": ("jax._src.array", "_reconstruct_array", True, "numpy.core.multiarray"),
    "jax-0.4.35-numpy2": ("jax._src.array", "_reconstruct_array", False, "numpy._core.multiarray"),
    "haiku-0.0.5-flatmapping": (None, None, False, "numpy.core.multiarray"),
}
PROTOCOLS = (2, 3, 4)


def _stand_in(module: str, name: str, fn) -> None:
    """Register ``module.name`` so pickle can find ``fn`` under that path."""
    mod = sys.modules.get(module)
    if mod is None:
        mod = sys.modules[module] = types.ModuleType(module)
    fn.__module__, fn.__qualname__, fn.__name__ = module, name, name
    setattr(mod, name, fn)


@contextlib.contextmanager
def _registered(paths: dict[str, Any]):
    """Temporarily make ``{"module.name": obj}`` importable, restoring ``sys.modules`` after."""
    saved_modules = dict(sys.modules)
    saved_attrs = []
    try:
        for path, obj in paths.items():
            module, name = path.rsplit(".", 1)
            mod = sys.modules.get(module)
            if mod is not None:
                saved_attrs.append((mod, name, getattr(mod, name, _MISSING)))
            _stand_in(module, name, obj)
        yield
    finally:
        for mod, name, old in reversed(saved_attrs):
            if old is _MISSING:
                delattr(mod, name)
            else:
                setattr(mod, name, old)
        for module in set(sys.modules) - set(saved_modules):
            del sys.modules[module]


_MISSING = object()


class _NumpyStyleArray:
    """Reduces like numpy 1.x/2.x: _reconstruct(ndarray, (0,), b'b') then BUILD(state)."""

    def __init__(self, value: np.ndarray, reconstruct):
        self.value, self.reconstruct = np.asarray(value), reconstruct

    def __reduce__(self):
        _, args, state = self.value.__reduce__()
        return self.reconstruct, args, state


class _JaxStyleArray:
    """Reduces like a 2022 jax array: wrapper(_reconstruct, args, arr_state, aval_state)."""

    def __init__(self, value, wrapper, reconstruct, named_shape: bool):
        self.value, self.wrapper, self.reconstruct = np.asarray(value), wrapper, reconstruct
        self.named_shape = named_shape

    def __reduce__(self):
        _, args, state = self.value.__reduce__()
        aval = {"weak_type": False, **({"named_shape": {}} if self.named_shape else {})}
        return self.wrapper, (self.reconstruct, args, state, aval)


class _FlatMapping(dict):
    """haiku <= 0.0.5's immutable mapping; pickles as FlatMapping(dict)."""

    def __reduce__(self):
        return _FlatMapping, (dict(self),)


def _numpy_reconstruct(*args):  # pickled by path only
    return np.ndarray.__new__(*args)


def _jax_wrapper(fun, args, arr_state, aval_state):  # pickled by path only
    value = fun(*args)
    value.__setstate__(arr_state)
    return value


def dumps_2022(state: TrainingState, variant: str, protocol: int = 4) -> bytes:
    """Pickle ``state`` as the given 2022 writer stack would have (see ``PICKLE_VARIANTS``)."""
    wrapper_module, wrapper_name, named_shape, numpy_module = PICKLE_VARIANTS[variant]
    paths: dict[str, Any] = {
        f"{numpy_module}._reconstruct": _numpy_reconstruct,
        "__main__.TrainingState": TrainingState,
    }
    if wrapper_module:
        paths[f"{wrapper_module}.{wrapper_name}"] = _jax_wrapper
    flat_mapping = variant.startswith("haiku-0.0.5")
    if flat_mapping:
        paths["haiku._src.data_structures.FlatMapping"] = _FlatMapping

    def array(x):
        if wrapper_module:
            return _JaxStyleArray(x, _jax_wrapper, _numpy_reconstruct, named_shape)
        return _NumpyStyleArray(x, _numpy_reconstruct)

    def params_tree(tree):
        tree = jax.tree.map(array, tree)
        if flat_mapping:
            return _FlatMapping({k: _FlatMapping(v) for k, v in tree.items()})
        return tree

    opt_state = _rewrite_opt_state(state.opt_state, params_tree, array)
    # The pickled optax classes keep their real module path (optax._src.*); only the
    # owner of TrainingState must look like the notebook.
    saved = (TrainingState.__module__, TrainingState.__qualname__)
    TrainingState.__module__ = "__main__"
    try:
        with _registered(paths):
            return pickle.dumps(TrainingState(params_tree(state.params), opt_state), protocol)
    finally:
        TrainingState.__module__, TrainingState.__qualname__ = saved


def _rewrite_opt_state(node, params_tree, array):
    """Optax state with its parameter-shaped trees and scalars in the variant's array form."""
    if isinstance(node, optax.ScaleByAdamState):
        return type(node)(array(node.count), params_tree(node.mu), params_tree(node.nu))
    if isinstance(node, tuple) and not hasattr(node, "_fields"):
        return tuple(_rewrite_opt_state(n, params_tree, array) for n in node)
    return node


def write_2022_pickle(path: str | Path, state: TrainingState, variant: str = "jax-0.3.25",
                      protocol: int = 4) -> Path:
    path = Path(path)
    path.write_bytes(dumps_2022(state, variant, protocol))
    return path


@functools.lru_cache(maxsize=8)
def reference_params(config, head: str = "mlm", *, num_classes: int = 2, seed: int = 0):
    """(logits_fn, hidden_fn, params): the Haiku model with random params (cached).

    The values are ``benchmarks.haiku_original.random_params``: Haiku's names and init scales,
    non-zero biases and offsets, scales != 1.
    """
    logits_fn, hidden_fn = build_haiku_model(config, head, num_classes)
    params = random_params(config, head, num_classes=num_classes, seed=seed)
    return logits_fn, hidden_fn, params


def padded_batch(config, batch: int = 3, length: int = 12, seed: int = 0):
    """(ids, attention_mask), int32 (B, S): [CLS]=1 ... [SEP]=2 then [PAD]=0, varied lengths."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, size=(batch, length), dtype=np.int32)
    attention_mask = np.zeros((batch, length), np.int32)
    for row in range(batch):
        real = max(2, length - 3 * row)  # the first row is unpadded, later rows padded more
        ids[row, 0], ids[row, real - 1], ids[row, real:] = 1, 2, 0
        attention_mask[row, :real] = 1
    return ids, attention_mask
