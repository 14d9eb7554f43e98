"""The original M2L 2022 tutorial encoder, written in dm-haiku (test and bench only).

Written from ``shared/design/haiku-original.md`` so that its parameter names come out
exactly as in the published checkpoint; the parity tests compare the converted NNX model
against it. It also writes pickles in each format a 2022 training run could have produced,
by registering stand-in modules in ``sys.modules`` while pickling (pickle records the
module path of whatever ``__reduce__`` returns), so those formats are tested without the
2022 library versions.
"""

from __future__ import annotations

import contextlib
import functools
import math
import pickle
import sys
import types
from pathlib import Path
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.models.m2l import LAYER_NORM_EPS, MASK_VALUE, sinusoidal_table


# Like the tutorial, every module creates its sub-modules in ``__init__``: Haiku then
# names them ``parent/~/child`` (``parent/child`` for ones created in ``__call__``).


class Embeddings(hk.Module):
    """Token embedding scaled by sqrt(d_model) (``embeddings/~/embed``)."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.embed = hk.Embed(vocab_size, d_model,
                              w_init=hk.initializers.TruncatedNormal(stddev=1.0))

    def __call__(self, ids):
        return self.embed(ids) * math.sqrt(self.d_model)


def positional_encoding(x, positional: str, max_len: int):
    """``"none"`` reproduces the tutorial's discarded (all-zero) table."""
    if positional == "none":
        return x + jnp.zeros((max_len, x.shape[-1]), x.dtype)[: x.shape[1]]
    return x + sinusoidal_table(max_len, x.shape[-1])[: x.shape[1]]


def layer_norm(name=None):
    return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, eps=LAYER_NORM_EPS,
                        name=name)


def dropout(x, rate: float, is_training: bool):
    return hk.dropout(hk.next_rng_key(), rate, x) if is_training else x


class MultiheadAttention(hk.Module):
    """The tutorial's own attention: Linear Q (``linear``), K, V, output (``linear_3``)."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.query, self.key, self.value, self.output = (hk.Linear(d_model) for _ in range(4))

    def __call__(self, x, mask):
        batch, length, _ = x.shape
        d_k = self.d_model // self.num_heads

        def heads(t):
            return t.reshape(batch, length, self.num_heads, d_k).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d_k)
        mask = jnp.expand_dims(mask, 1)  # (B, 1, S) -> (B, 1, 1, S)
        scores = jnp.where(mask == 0, MASK_VALUE, scores)
        context = jax.nn.softmax(scores, axis=-1) @ v
        return self.output(context.transpose(0, 2, 1, 3).reshape(batch, length, self.d_model))


class PositionwiseFeedForward(hk.Module):
    def __init__(self, d_model: int, d_ff: int, rate: float):
        super().__init__()
        self.inner, self.outer, self.rate = hk.Linear(d_ff), hk.Linear(d_model), rate

    def __call__(self, x, is_training: bool):
        return self.outer(dropout(jax.nn.relu(self.inner(x)), self.rate, is_training))


class EncoderBlock(hk.Module):
    """Post-LN: x = LN1(x + Drop(MHA(x))); x = LN2(x + Drop(FF(x)))."""

    def __init__(self, config):
        super().__init__()
        self.rate = config.dropout
        self.attention = MultiheadAttention(config.d_model, config.num_heads)
        self.attention_norm = layer_norm()
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff, config.dropout)
        self.feed_forward_norm = layer_norm()

    def __call__(self, x, mask, is_training: bool):
        x = self.attention_norm(x + dropout(self.attention(x, mask), self.rate, is_training))
        ff = self.feed_forward(x, is_training)
        return self.feed_forward_norm(x + dropout(ff, self.rate, is_training))


class TransformerEncoder(hk.Module):
    def __init__(self, config, num_blocks: int):
        super().__init__()
        self.blocks = [EncoderBlock(config) for _ in range(num_blocks)]

    def __call__(self, x, mask, is_training: bool):
        for block in self.blocks:
            x = block(x, mask, is_training)
        return x


def mlm_head(config, hidden):
    x = jax.nn.relu(hk.Linear(config.d_model, name="dec_lin_1")(hidden))
    return hk.Linear(config.vocab_size, name="dec_lin_2")(layer_norm("dec_norm")(x))


def classifier_head(config, hidden, num_classes: int):
    x = layer_norm()(jax.nn.relu(hk.Linear(config.d_model)(hidden)))
    return hk.Linear(num_classes)(x[:, 0])


def build_haiku_model(config, head: str = "mlm", num_classes: int = 2):
    """``hk.transform``ed (logits_fn, hidden_fn); ``head`` is ``"mlm"`` or ``"classifier"``.

    Both take ``(params, rng, ids, mask)`` with mask (B, 1, S). ``hidden_fn`` also takes
    ``num_blocks`` (0 = embeddings only) for per-layer checks: blocks are named in creation
    order, so its block ``i`` has the same parameter names as in the full model.
    """

    def hidden(ids, mask, num_blocks, is_training):
        x = Embeddings(config.vocab_size, config.d_model)(ids)
        x = dropout(positional_encoding(x, config.positional, config.max_len),
                    config.dropout, is_training)
        return TransformerEncoder(config, num_blocks)(x, mask, is_training)

    def logits_fn(ids, mask, is_training=False):
        x = hidden(ids, mask, config.num_layers, is_training)
        return mlm_head(config, x) if head == "mlm" else classifier_head(config, x, num_classes)

    def hidden_fn(ids, mask, num_blocks=None):
        return hidden(ids, mask, config.num_layers if num_blocks is None else num_blocks, False)

    return hk.transform(logits_fn), hk.transform(hidden_fn)


# ------------------------------------------------------------------- training state


class TrainingState(NamedTuple):
    """The tutorial notebook's state (pickled as ``__main__.TrainingState``)."""

    params: Any
    opt_state: Any


def make_training_state(params, learning_rate: float = 1e-3, *, step: int = 1):
    """``TrainingState(params, opt_state)`` with the tutorial's optimizer state.

    ``optax.chain(clip_by_global_norm(1), adam(lr)).init`` gives the exact structure; its
    Adam moments are then set as after ``step`` steps of a constant gradient (NumPy, so
    nothing is compiled), so ``mu``/``nu``/``count`` are not trivially zero.
    """
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    clip_state, (adam_state, scale_state) = optimizer.init(params)
    b1, b2 = 0.9, 0.999
    adam_state = adam_state._replace(
        count=np.asarray(step, np.int32),
        mu=jax.tree.map(lambda p: np.full_like(p, 0.01 * (1 - b1**step)), params),
        nu=jax.tree.map(lambda p: np.full_like(p, 1e-4 * (1 - b2**step)), params),
    )
    return TrainingState(params, (clip_state, (adam_state, scale_state)))


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


def mask_3d(attention_mask) -> np.ndarray:
    """(B, S) -> the tutorial's (B, 1, S) batch mask."""
    return np.asarray(attention_mask)[:, None, :]


@functools.lru_cache(maxsize=8)
def reference_params(config, head: str = "mlm", *, num_classes: int = 2, seed: int = 0):
    """(logits_fn, hidden_fn, params): the Haiku model with random params (cached).

    Shapes and names come from Haiku (``eval_shape`` of its init, nothing compiled); values
    are NumPy draws at Haiku's init scales, with non-zero biases and LayerNorm offsets and
    scales != 1 so that a swapped or dropped parameter shows in the outputs.
    """
    logits_fn, hidden_fn = build_haiku_model(config, head, num_classes)
    ids, attention_mask = padded_batch(config, batch=1, length=4)
    shapes = jax.eval_shape(logits_fn.init, jax.random.PRNGKey(seed), ids,
                            mask_3d(attention_mask))
    rng = np.random.default_rng(seed)

    def draw(name, shape):
        stddev = {"w": 1 / math.sqrt(shape.shape[0]), "embeddings": 1.0}.get(name, 0.1)
        centre = 1.0 if name == "scale" else 0.0
        return (centre + stddev * rng.standard_normal(shape.shape)).astype(np.float32)

    params = {module: {name: draw(name, shape) for name, shape in sorted(leaves.items())}
              for module, leaves in sorted(shapes.items())}
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
