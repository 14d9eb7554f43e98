"""Building blocks shared by every family: dropout, LayerNorm, training-mode helpers.

Family code (``zoo/models/<family>/``) builds on these; nothing here knows a family.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoo.errors import InvalidArgumentError


def layer_norm(num_features: int, epsilon: float, rngs: nnx.Rngs, *, use_bias: bool = True
               ) -> nnx.LayerNorm:
    """A LayerNorm with the given epsilon and the exact two-pass variance."""
    return nnx.LayerNorm(num_features, epsilon=epsilon, use_fast_variance=False,
                         use_bias=use_bias, rngs=rngs)


class Dropout(nnx.Module):
    """Inverted dropout that draws 16 random bits per element instead of a float.

    ``nnx.Dropout`` turns 32 random bits into a uniform float per element; here each
    32-bit word yields two 16-bit draws compared with ``round(rate * 2**16)``, which
    halves the PRNG work (the costliest part of dropout on CPU) and keeps the rate exact
    to 1e-5. Like ``nnx.Dropout`` it is active only in training mode
    (``model.train()``) and then needs ``rngs`` with a ``dropout`` stream.
    """

    def __init__(self, rate: float):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.deterministic = False  # flipped by model.train() / model.eval()

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.deterministic or self.rate == 0.0:
            return x
        if rngs is None:
            raise ValueError("dropout is active (training mode) but no `rngs` were given: "
                             "call model(..., rngs=nnx.Rngs(dropout=key)) or model.eval()")
        # Words are drawn in x's own shape (last axis halved): with jax's partitionable
        # threefry, each device then draws just the bits of its shard of a sharded x, and the
        # values do not depend on the sharding. (A flat draw reshaped to x.shape made XLA
        # gather the full random array on every device.)
        last = x.shape[-1] if x.ndim else 1
        words = jax.random.bits(rngs.dropout(), (*x.shape[:-1], (last + 1) // 2), jnp.uint32)
        draws = jnp.concatenate([words & 0xFFFF, words >> 16], axis=-1)[..., :last]
        keep = draws.reshape(x.shape) >= jnp.uint32(round(self.rate * 65536))
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


class Embed(nnx.Embed):
    """``nnx.Embed`` whose lookup also works under jax's explicit sharding mode.

    With explicit mesh axes, a gather from a table by batch-sharded ids has no sharding jax
    can infer (``ShardingTypeError``); the output here is sharded like the ids, with the
    feature axis whole. Parameters and numerics are ``nnx.Embed``'s.
    """

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if out_sharding is None and _explicit_sharding(inputs):
            spec = jax.typeof(inputs).sharding.spec
            out_sharding = jax.sharding.PartitionSpec(*spec, *([None] * (inputs.ndim - len(spec))),
                                                      None)
            table = self.embedding[...]
            if self.dtype is not None:
                table = table.astype(self.dtype)
            return table.at[inputs].get(out_sharding=out_sharding)
        return super().__call__(inputs, out_sharding=out_sharding)


def _explicit_sharding(x: jax.Array) -> bool:
    """True when ``x`` is traced under a mesh with explicit axes."""
    try:
        sharding = jax.typeof(x).sharding
    except (AttributeError, TypeError):
        return False
    mesh = getattr(sharding, "mesh", None)
    return bool(mesh is not None and not mesh.empty
                and any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types))


# Compute dtypes a run may ask for (``--precision``); parameters always stay float32.
PRECISIONS = {"float32": None, "bf16": jnp.bfloat16}


def einsum(spec: str, a: jax.Array, b: jax.Array, *, dtype=None, out_dtype=None
           ) -> jax.Array:
    """Two-operand ``jnp.einsum`` in the compute ``dtype`` (the operands are cast to it;
    default: their own), accumulating in float32 when that is bf16 or float16, and
    returning ``out_dtype`` (default: the operands' dtype before the cast).

    Forward and backward products then take 16-bit operands with float32 accumulation (the
    gradient is cast to the operands' dtype first), laid out as XLA's CPU backend runs on
    bf16 matrix units (AMX, AVX512-BF16): there a bf16 x bf16 -> bf16 product, or one
    whose left operand is not contracted over its last axes, is converted to float32
    (~190 GFLOP/s on a 2-core Xeon with AMX), while ``[batch, free, contracted] x
    [batch, contracted | free]`` -> float32 runs at 700-1,700 GFLOP/s. On GPUs these are
    the products of any bf16 matmul. Every index must appear in at least two of the
    operands and the output (none summed within one operand), as in every product of these
    models. float32 operands take plain ``jnp.einsum``.
    """
    result = jnp.result_type(a, b) if out_dtype is None else out_dtype
    if dtype is not None:
        a, b = a.astype(dtype), b.astype(dtype)
    low = a.dtype == b.dtype and a.dtype in (jnp.bfloat16, jnp.float16)
    if not low:
        out = jnp.einsum(spec, a, b)
        return out if out_dtype is None else out.astype(out_dtype)
    return _low_precision_einsum(spec, jnp.dtype(result), a, b)


def _einsum_parts(spec: str) -> tuple[str, str, str]:
    inputs, out = spec.replace(" ", "").split("->")
    sa, sb = inputs.split(",")
    for index in set(sa + sb + out):
        if (index in sa) + (index in sb) + (index in out) < 2:
            raise ValueError(f"einsum {spec!r}: index {index!r} must appear in two of the "
                             "operands and the output")
    return sa, sb, out


def _product(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``einsum(spec, a, b)`` of 16-bit operands as a float32 array, with the left operand
    contracted over its last axes and the output in ``[batch, left free, right free]``
    order (what XLA's CPU backend gives its bf16 kernels); a product that cannot be laid out
    so (or is sharded explicitly, whose axes are not split here) is computed in float32."""
    sa, sb, out = _einsum_parts(spec)
    batch = "".join(i for i in out if i in sa and i in sb)
    contracted = "".join(i for i in sa if i not in out)
    for lhs, rhs, sl, sr in ((a, b, sa, sb), (b, a, sb, sa)):
        free_l = "".join(i for i in out if i in sl and i not in batch)
        free_r = "".join(i for i in out if i in sr and i not in batch)
        if out != batch + free_l + free_r:
            continue
        if not contracted or not free_r or _explicit_sharding(rhs):
            break
        lhs = _materialized_transpose(lhs, [sl.index(i) for i in batch + free_l + contracted])
        if lhs is None:
            break
        # the right operand keeps its own order: [batch, contracted, free] or [.., free, ..]
        contracted_first = sr.index(contracted[0]) < sr.index(free_r[0])
        rhs_order = batch + (contracted + free_r if contracted_first else free_r + contracted)
        rhs = jnp.transpose(rhs, [sr.index(i) for i in rhs_order])
        n_b, n_c = len(batch), len(contracted)
        dims = ((tuple(range(lhs.ndim - n_c, lhs.ndim)),
                 tuple(rhs_order.index(i) for i in contracted)),
                (tuple(range(n_b)), tuple(range(n_b))))
        return jax.lax.dot_general(lhs, rhs, dims, preferred_element_type=jnp.float32)
    return jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))


def _materialized_transpose(x: jax.Array, perm: list[int]) -> jax.Array | None:
    """``jnp.transpose(x, perm)`` as a copy XLA does not fold into the product that reads
    it (a plain transpose becomes the product's dimension numbers, and so a float32 product
    on the CPU): the largest moved axis of even size is split in two around the transpose.
    None when no moved axis can be split, or ``x`` is sharded explicitly. Other backends'
    matmuls read transposed operands as they are: there it is a plain transpose."""
    if perm == sorted(perm):
        return x
    if jax.default_backend() != "cpu":
        return jnp.transpose(x, perm)
    if _explicit_sharding(x):
        return None
    moved = [axis for position, axis in enumerate(perm) if axis != position
             and x.shape[axis] % 2 == 0]
    if not moved:
        return None
    axis = max(moved, key=lambda i: x.shape[i])
    split = x.reshape(x.shape[:axis] + (2, x.shape[axis] // 2) + x.shape[axis + 1:])
    order = []
    for p in perm:
        order += [axis, axis + 1] if p == axis else [p + (p > axis)]
    return jax.lax.transpose(split, order).reshape(tuple(x.shape[p] for p in perm))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _low_precision_einsum(spec, out_dtype, a, b):
    return _product(spec, a, b).astype(out_dtype)


def _low_precision_einsum_fwd(spec, out_dtype, a, b):
    return _low_precision_einsum(spec, out_dtype, a, b), (a, b)


def _low_precision_einsum_bwd(spec, out_dtype, residuals, g):
    a, b = residuals
    sa, sb, out = _einsum_parts(spec)
    g = g.astype(a.dtype)
    grad_a = _product(f"{out},{sb}->{sa}", g, b)
    grad_b = _product(f"{sa},{out}->{sb}", a, g)
    return grad_a.astype(a.dtype), grad_b.astype(b.dtype)


_low_precision_einsum.defvjp(_low_precision_einsum_fwd, _low_precision_einsum_bwd)


@jax.custom_vjp
def stored_gradient(x: jax.Array) -> jax.Array:
    """The identity, whose gradient XLA's CPU backend computes once and stores.

    In a pre-LN stack (``x += f(LN(x))``) the residual stream's gradient at block l is the
    sum of every later block's LayerNorm backward: elementwise work, given their row
    statistics. XLA's CPU fusion then recomputes that whole sum inside each block's fusion
    (O(layers²): ModernBERT-base's first block fused 1,061 operations) instead of reading
    it back. ``jax.lax.optimization_barrier`` does not stop it (the CPU pipeline drops
    barriers before fusion); a conditional does, so on the CPU the cotangent passes through
    ``lax.cond(g[0] == g[0], identity, optimization_barrier)``: both branches return it
    unchanged, and XLA cannot fuse across them. Other platforms get the plain identity.
    """
    return x


def _stored_gradient_fwd(x):
    return x, None


def _stored_gradient_bwd(_, g):
    def stored(g):
        first = g.reshape(-1)[0]
        return jax.lax.cond(first == first, lambda g: g, jax.lax.optimization_barrier, g)

    return (jax.lax.platform_dependent(g, cpu=stored, default=lambda g: g),)


stored_gradient.defvjp(_stored_gradient_fwd, _stored_gradient_bwd)


def linear_dot_general(lhs, rhs, dimension_numbers, precision=None,
                       preferred_element_type=None, out_sharding=None):
    """``nnx.Linear``'s product through :func:`einsum` (float32 accumulation of bf16
    operands, in the backward pass too), returned in float32 so that the bias is added,
    and its gradient summed over tokens, in float32; what ``set_precision`` gives every
    Linear."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    plain = (lhs_batch or rhs_batch or tuple(lhs_contract) != (lhs.ndim - 1,)
             or tuple(rhs_contract) != (0,) or rhs.ndim != 2 or precision is not None
             or preferred_element_type is not None or out_sharding is not None)
    if plain:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type,
                                   out_sharding=out_sharding)
    rows = "abcdefgh"[:lhs.ndim - 1]
    return einsum(f"{rows}y,yz->{rows}z", lhs, rhs, out_dtype=jnp.float32)


_precision_changes = 0


def precision_changes() -> int:
    """How many times ``set_precision`` ran in this process: a cached forward built before
    the last change was traced with other compute dtypes and is rebuilt."""
    return _precision_changes


def set_precision(model: nnx.Module, precision: str) -> None:
    """Mixed precision in place: matrix products compute in ``precision``, everything
    else and the parameters stay float32 (as ``torch.autocast`` does).

    Every Linear casts its float32 input and parameters to the compute dtype and
    accumulates in float32 (:func:`linear_dot_general`), returning float32, and the
    attention products of every family take the Linear's dtype (:func:`einsum`); LayerNorm,
    embeddings, activations, softmax and the loss stay float32, and so do gradients summed
    over tokens (biases, LayerNorm). On CPUs with bf16 matrix units (AMX) XLA runs these
    products several times faster than float32 ones; on GPUs they are the usual bf16
    matmuls. ``"float32"`` restores full precision.
    """
    global _precision_changes
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    _precision_changes += 1
    for _, module in nnx.iter_modules(model):
        if isinstance(module, (nnx.Embed, nnx.LayerNorm)):
            module.dtype = None  # float32: only the products run in the compute dtype
        if isinstance(module, nnx.Linear):
            module.dtype = PRECISIONS[precision]
            module.dot_general = (jax.lax.dot_general if precision == "float32"
                                  else linear_dot_general)
        elif getattr(type(module), "MIXED_PRECISION", False):  # products of its own
            module.dtype = PRECISIONS[precision]


# XLA's CPU backend hands dots and reductions to YNNPACK by default. Whole programs decide
# (``benchmarks/cpu_programs.py``; a lone product's speed did not predict them): a
# RoBERTa-base forward ran 11 % slower with YNNPACK's float32 dots than with Eigen's on a
# 2-core Xeon with AVX-512 and AMX, and level on a 2-core Zen 4 EPYC; all-MiniLM-L6-v2 (width
# 384) ran 5-10 % faster with XLA's default on the EPYC; at width 128 (the M2L encoders)
# YNNPACK was as fast or up to 23 % faster on the Xeon; for bf16 only YNNPACK uses the AMX
# units (518-1,098 GFLOP/s against Eigen's 192-265). So float32 models at least
# EIGEN_MIN_WIDTH wide compile with YNNPACK's dots off -- and only its dots: with its
# reductions off too (LayerNorm, softmax, pooling on XLA's own loops), as before
# 2026-12-06, the EPYC ran all-MiniLM-L6-v2 4-8 % and RoBERTa-base 3 % slower.
EIGEN_MIN_WIDTH = 768
CPU_DOTS_ENV = "ZOO_XLA_CPU_DOTS"
CPU_DOTS = ("auto", "eigen", "xla")
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# XLA's default list (individual dots, reductions, convolutions) without the dots.
EIGEN_DOTS = {_YNN_OPTION: "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}


@functools.lru_cache(maxsize=1)
def _ynn_option_known() -> bool:
    """Whether this jaxlib accepts the YNNPACK option (it is experimental: a jaxlib without
    it refuses the compile)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=EIGEN_DOTS).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - any refusal means: do not pass it
        return False
    return True


def low_precision(model: nnx.Module) -> bool:
    """Whether ``set_precision`` made any of the model's products 16-bit."""
    return any(isinstance(m, nnx.Linear) and m.dtype in (jnp.bfloat16, jnp.float16)
               for _, m in nnx.iter_modules(model))


def model_width(model: nnx.Module) -> int:
    """The width of the model's products: the largest ``min(in, out)`` of its Linear layers
    (the hidden size of an encoder)."""
    return max((min(m.in_features, m.out_features) for _, m in nnx.iter_modules(model)
                if isinstance(m, nnx.Linear)), default=0)


def compiler_options(model: nnx.Module) -> dict:
    """XLA options for jitting ``model``'s programs (``jax.jit(..., compiler_options=…)``):
    on the CPU backend, dots on Eigen instead of YNNPACK (``EIGEN_DOTS``; reductions stay on
    YNNPACK) for a float32 model at least ``EIGEN_MIN_WIDTH`` wide, unless ``XLA_FLAGS``
    already chooses or ``ZOO_XLA_CPU_DOTS`` says otherwise: ``auto`` (the default, as
    described), ``eigen`` (any float32 or bf16 model) or ``xla`` (XLA's own choice: no
    option). Elsewhere: none."""
    choice = os.environ.get(CPU_DOTS_ENV, "auto").strip().lower() or "auto"
    if choice not in CPU_DOTS:
        raise InvalidArgumentError(f"{CPU_DOTS_ENV}={os.environ[CPU_DOTS_ENV]!r}: expected one of "
                                   f"{', '.join(CPU_DOTS)}")
    if (choice == "xla" or jax.default_backend() != "cpu"
            or _YNN_OPTION in os.environ.get("XLA_FLAGS", "")
            or (choice == "auto" and (low_precision(model)
                                      or model_width(model) < EIGEN_MIN_WIDTH))
            or not _ynn_option_known()):
        return {}
    return dict(EIGEN_DOTS)


class CastState:
    """A split model's state for a jitted forward, with the float32 parameters that layers
    cast to a 16-bit compute dtype (``set_precision``) cast once, not on every call: for
    one sentence that cast (every weight, every call) cost more than the forward itself.
    Calling it gives the state to pass; it is cast again when a parameter array has been
    replaced since (training, ``nnx.update``). A float32 model's state is passed as it is.
    """

    def __init__(self, model: nnx.Module, state):
        self.state = state
        self.dtypes = {
            tuple(path) + (name,): module.dtype for path, module in nnx.iter_modules(model)
            if isinstance(module, (nnx.Linear, nnx.Embed, nnx.LayerNorm))
            and module.dtype is not None and jnp.dtype(module.dtype).itemsize == 2
            for name, value in vars(module).items() if isinstance(value, nnx.Param)}
        self._sources: list | None = None
        self._cast = None

    def __call__(self):
        if not self.dtypes:
            return self.state
        sources = jax.tree.leaves(self.state)
        if self._sources is None or any(a is not b for a, b in zip(sources, self._sources)):
            flat = []
            for path, variable in nnx.to_flat_state(self.state):
                value = variable.get_value()
                if path in self.dtypes and value.dtype == jnp.float32:
                    variable = variable.replace(value.astype(self.dtypes[path]))
                flat.append((path, variable))
            self._cast, self._sources = nnx.from_flat_state(flat), sources
        return self._cast


def in_training_mode(model: nnx.Module) -> bool:
    """True when some dropout layer is active (after ``model.train()``)."""
    return any(getattr(m, "deterministic", True) is False for _, m in model.iter_modules())


def set_dropout_rate(model: nnx.Module, rate: float) -> None:
    """Set every dropout layer's rate (a fine-tuning override of the preset's)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    for _, module in model.iter_modules():
        if hasattr(module, "deterministic") and hasattr(module, "rate"):
            module.rate = rate


def count_params(module: nnx.Module) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


# ------------------------------------------------------------------------------ configs


# Bounds no real encoder comes near: a config beyond them is refused before anything is
# built (a million layers would take hours to build, abstractly or not).
MAX_SIZE = 2**31 - 1
MAX_LAYERS = 1024


def check_sizes(config, names=("vocab_size", "hidden_size", "num_layers", "num_heads",
                                "intermediate_size", "max_position_embeddings")) -> None:
    """ValueError naming the field: each of ``names`` a positive int (at most ``MAX_SIZE``,
    ``num_layers`` at most ``MAX_LAYERS``), heads dividing width."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        limit = MAX_LAYERS if name == "num_layers" else MAX_SIZE
        if value > limit:
            digits = str(value) if value < 10**20 else f"a {len(str(value))}-digit number"
            raise ValueError(f"{name} must be at most {limit}, got {digits}")
    if config.hidden_size % config.num_heads:
        raise ValueError(f"hidden_size={config.hidden_size} is not divisible by "
                         f"num_heads={config.num_heads}")


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_fractions(config, names=("dropout", "attention_dropout", "classifier_dropout")
                    ) -> None:
    """ValueError naming the field unless each of ``names`` is a number in [0, 1)."""
    for name in names:
        value = getattr(config, name)
        if not _number(value) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_positive(config, names=("layer_norm_eps",)) -> None:
    """ValueError naming the field unless each of ``names`` is a finite number > 0 (a NaN
    or infinite epsilon or rotary base would only show as NaN outputs); stored as float."""
    for name in names:
        value = getattr(config, name)
        if not _number(value) or not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        object.__setattr__(config, name, float(value))


def check_count(config, name: str, low: int = 0) -> None:
    """ValueError naming the field unless it is an integer >= ``low``."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_choice(config, name: str, choices) -> None:
    """ValueError unless ``config.<name>`` is one of ``choices`` (named in the message)."""
    value = getattr(config, name)
    if not isinstance(value, str) or value not in choices:  # (a list or dict is unhashable)
        raise ValueError(f"{name} {value!r} is not supported (supported: {', '.join(choices)})")


# Megatron-style split over a mesh's ``model`` axis (zoo/sharding.py) of the post-LN blocks
# below (BERT, RoBERTa): word embeddings by vocabulary rows, Q/K/V and the intermediate layer
# by output features, the attention output and layer output by input features; LayerNorms,
# positions and biases added after a reduction are replicated.
POST_LN_PARTITION_RULES = (
    (r"embeddings/word/embedding$", ("model", None)),
    (r"attention/(query|key|value)/kernel$", (None, "model")),
    (r"attention/(query|key|value)/bias$", ("model",)),
    (r"attention/output/kernel$", ("model", None)),
    (r"layers/\d+/intermediate/kernel$", (None, "model")),
    (r"layers/\d+/intermediate/bias$", ("model",)),
    (r"layers/\d+/output/kernel$", ("model", None)),
)


def run_layers(layers, x, attention_mask, *, rngs=None, first_token_only: bool = False):
    """(B, S, H) through blocks that see tokens flattened to (B*S, H), and back.

    ``first_token_only``: the last block computes position 0 alone -- its keys and values
    still read every token -- and the result is (B, 1, H): what a head that reads only the
    first token ([CLS], ``<s>``) needs. In a 6-layer encoder that skips about a seventh of
    the forward (the last block's queries, attention output and feed-forward for every
    other token); in a 12-layer one about a fourteenth."""
    batch, length, hidden = x.shape
    x = x.reshape(batch * length, hidden)
    last = len(layers) - 1 if first_token_only else -1
    for i, layer in enumerate(layers):
        if i == last:
            return layer(x, attention_mask, rngs=rngs,
                         first_token_only=True).reshape(batch, 1, hidden)
        x = layer(x, attention_mask, rngs=rngs)
    return x.reshape(batch, length, hidden)


# ------------------------------------------------------------------------------ Transformer blocks

def _gelu(x):  # x/2 (1 + erf(x/sqrt(2))), torch's and transformers' exact GELU
    # Not jax.nn.gelu(approximate=False): it goes through erfc, which XLA's CPU backend
    # computes about 3x slower than erf (the FFN's GELU fusion: 60 -> 26 ms of a 1.4 s
    # RoBERTa-base forward at 64 x 32 tokens). Python floats keep bf16 inputs bf16.
    return x * (0.5 + 0.5 * jax.lax.erf(x * 0.7071067811865476))


def _gelu_tanh(x):  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    return jax.nn.gelu(x, approximate=True)


def _relu6(x):
    return jnp.clip(x, 0.0, 6.0)


# Activations by transformers' names (its ACT2FN, all but those with learned parameters:
# prelu, xielu), for every family and head: config.json's hidden_act / pooler_hidden_act /
# classifier_activation name one of these.
ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_python": _gelu,
    "gelu_10": lambda x: jnp.clip(_gelu(x), -10.0, 10.0),
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "laplace": lambda x: 0.5 * (1.0 + jax.lax.erf((x - 0.707107) * (1 / (0.282095 * 2 ** 0.5)))),
    "linear": lambda x: x,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "relu": jax.nn.relu,
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "relu6": _relu6,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),  # torch's default slope
    "hardswish": lambda x: x * _relu6(x + 3.0) * (1 / 6),
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "sqrtsoftplus": lambda x: jnp.sqrt(jax.nn.softplus(x)),
    "tanh": jnp.tanh,
}


def dense(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    # BERT's initialiser: N(0, 0.02) weights, zero biases.
    return nnx.Linear(n_in, n_out, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)


def embed(n: int, d: int, rngs: nnx.Rngs) -> Embed:
    return Embed(n, d, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)


class SelfAttention(nnx.Module):
    """Multi-head self-attention over flattened tokens with a key-padding mask."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.query, self.key, self.value = (dense(h, h, rngs) for _ in range(3))
        self.output = dense(h, h, rngs)
        self.dropout = Dropout(config.attention_dropout)

    def __call__(self, x, key_mask, *, rngs=None, queries=None):
        """``x``: (B*S, H); ``key_mask``: (B, S), 1 = real token. ``queries``: (B*Q, H), the
        positions to compute (default: all of ``x``); the result has their rows."""
        batch, length = key_mask.shape
        hidden = x.shape[-1]
        d_head = hidden // self.num_heads
        queries = x if queries is None else queries
        count = queries.shape[0] // batch

        def heads(t, n):  # (B*n, H) -> (B, heads, n, d_head)
            # One axis split per reshape: jax's explicit sharding mode allows no more.
            t = t.reshape(batch, n, -1)
            return t.reshape(batch, n, self.num_heads, d_head).transpose(0, 2, 1, 3)

        q = heads(self.query(queries), count)
        k, v = heads(self.key(x), length), heads(self.value(x), length)
        dtype = self.query.dtype  # the compute dtype (set_precision)
        scores = einsum("bhqd,bhkd->bhqk", q, k, dtype=dtype) / math.sqrt(d_head)
        bias = jnp.where(key_mask[:, None, None, :] == 0, jnp.finfo(jnp.float32).min, 0.0)
        weights = jax.nn.softmax(scores + bias, axis=-1).astype(v.dtype)
        weights = self.dropout(weights, rngs=rngs)
        context = einsum("bhqk,bhkd->bhqd", weights, v, dtype=dtype)
        context = context.transpose(0, 2, 1, 3).reshape(batch, count, hidden)
        return self.output(context.reshape(batch * count, hidden))


class PostLNLayer(nnx.Module):
    """The post-LN Transformer block of BERT and RoBERTa (config: hidden_size, num_heads,
    intermediate_size, hidden_act, layer_norm_eps, dropout, attention_dropout): x = LN(x + Drop(Attn(x))); x = LN(x + Drop(W2 act(W1 x)))."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        h = config.hidden_size
        self.activation = config.hidden_act
        self.attention = SelfAttention(config, rngs=rngs)
        self.attention_norm = layer_norm(h, config.layer_norm_eps, rngs)
        self.intermediate = dense(h, config.intermediate_size, rngs)
        self.output = dense(config.intermediate_size, h, rngs)
        self.output_norm = layer_norm(h, config.layer_norm_eps, rngs)
        self.dropout = Dropout(config.dropout)

    def __call__(self, x, key_mask, *, rngs=None, first_token_only: bool = False):
        """(B*S, H) -> (B*S, H); with ``first_token_only``, (B, H): position 0's row only
        (``run_layers``)."""
        queries = x.reshape(*key_mask.shape, -1)[:, 0] if first_token_only else None
        residual = x if queries is None else queries
        attended = self.attention(x, key_mask, rngs=rngs, queries=queries)
        x = self.attention_norm(residual + self.dropout(attended, rngs=rngs))
        inner = ACTIVATIONS[self.activation](self.intermediate(x))
        return self.output_norm(x + self.dropout(self.output(inner), rngs=rngs))


