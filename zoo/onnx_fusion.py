"""Patterns of jaxpr equations that the ONNX converter writes as one fused ONNX operator.

jax lowers LayerNorm, softmax and the exact GELU to a dozen elementwise and reduction
equations each. Converted one by one, they reach ONNX Runtime as ops its graph optimiser
does not recognise, so it runs them unfused (``torch.onnx.export`` writes the forms ORT
fuses). Here, before a jaxpr is converted, its dataflow is searched for:

- **LayerNorm** over the last axis (flax's two-pass form: ``mean = sum(x) / n``,
  ``var = sum((x - mean)²) / n``, ``(x - mean) * (rsqrt(var + eps) * scale) + bias``; bias
  and scale optional) -> ``LayerNormalization(x, scale, bias, axis=-1, epsilon)`` (opset 17);
- **softmax** over one axis (``jax.nn.softmax``: ``exp(x - max) / sum``) -> ``Softmax``;
- **exact GELU** (the zoo's ``x * (0.5 + 0.5 * erf(x / sqrt 2))``) -> ``Gelu`` from opset 20;
  below it, the ``x * 0.5 * (1 + erf(x / sqrt 2))`` chain ORT's optimiser fuses.

A pattern is fused only when every intermediate value is used inside it (nothing else in
the graph reads the mean, say), and only in float32; anything else is converted equation by
equation as before. The fused operators compute the same functions (ONNX Runtime's
LayerNormalization keeps float32 statistics); the tests check the outputs against the
model's.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

import numpy as np
from jax.extend import core as jcore

SQRT_HALF = float(np.float32(np.sqrt(0.5)))


@dataclasses.dataclass(frozen=True)
class Fusion:
    """One matched pattern: ``emit(converter, read)`` writes its ONNX nodes and returns the
    output's name (``read(atom)`` gives an input's tensor name); ``inner`` are the indices of
    the equations it replaces besides its root."""

    emit: Callable[[Any, Callable[[Any], str]], str]
    inner: frozenset[int]


class _Dataflow:
    """Who produces and how often each variable of one jaxpr is read."""

    def __init__(self, jaxpr: jcore.Jaxpr):
        self.index: dict[Any, int] = {}
        self.producer: dict[Any, Any] = {}
        self.uses: collections.Counter = collections.Counter()
        for i, eqn in enumerate(jaxpr.eqns):
            self.index[id(eqn)] = i
            for var in eqn.outvars:
                self.producer[var] = eqn
            for atom in eqn.invars:
                if isinstance(atom, jcore.Var):
                    self.uses[atom] += 1
        for atom in jaxpr.outvars:
            if isinstance(atom, jcore.Var):
                self.uses[atom] += 1

    def eqn(self, atom, *names: str):
        """The equation producing ``atom`` if its primitive is one of ``names``."""
        if not isinstance(atom, jcore.Var):
            return None
        eqn = self.producer.get(atom)
        return eqn if eqn is not None and eqn.primitive.name in names else None


def _literal(atom, value: float, rtol: float = 1e-6) -> bool:
    return (isinstance(atom, jcore.Literal) and np.ndim(atom.val) == 0
            and np.isclose(float(atom.val), value, rtol=rtol, atol=0.0))


def _float32(atom) -> bool:
    return np.dtype(atom.aval.dtype) == np.float32


def _pairs(eqn):
    """A binary equation's operands in both orders (for add and mul)."""
    a, b = eqn.invars
    return ((a, b), (b, a))


class _Match:
    """Collects the equations a pattern walks through; fails with ``None`` returns."""

    def __init__(self, df: _Dataflow):
        self.df, self.eqns = df, []

    def take(self, atom, *names: str):
        eqn = self.df.eqn(atom, *names)
        if eqn is not None:
            self.eqns.append(eqn)
        return eqn

    def mark(self) -> int:
        return len(self.eqns)

    def undo(self, mark: int) -> None:
        del self.eqns[mark:]

    def kept(self, atom):
        """``atom`` is a value with one axis of size 1 inserted (a reshape or
        broadcast_in_dim, as ``keepdims`` does): returns (the value, that axis) or None."""
        eqn = self.take(atom, "reshape", "broadcast_in_dim")
        if eqn is None or not isinstance(eqn.invars[0], jcore.Var):
            return None
        source = eqn.invars[0]
        shape, out = list(source.aval.shape), tuple(eqn.outvars[0].aval.shape)
        for axis in range(len(shape) + 1):
            if out != tuple(shape[:axis] + [1] + shape[axis:]):
                continue
            if eqn.primitive.name == "broadcast_in_dim" and tuple(
                    eqn.params["broadcast_dimensions"]) != tuple(
                    d + (d >= axis) for d in range(len(shape))):
                continue
            return source, axis
        return None

    def row(self, atom, rank: int, width: int):
        """``atom`` is a 1-D [width] variable reshaped / broadcast to (1, ..., 1, width);
        returns that variable or None."""
        eqn = self.take(atom, "reshape", "broadcast_in_dim")
        if eqn is None:
            return None
        source = eqn.invars[0]
        if not isinstance(source, jcore.Var) or tuple(source.aval.shape) != (width,):
            return None
        if tuple(eqn.outvars[0].aval.shape) != (1,) * (rank - 1) + (width,):
            return None
        if eqn.primitive.name == "broadcast_in_dim" and \
                tuple(eqn.params["broadcast_dimensions"]) != (rank - 1,):
            return None
        return source

    def mean_last(self, atom, width: int):
        """``atom`` = ``reduce_sum(v, last axis) / width``: returns v or None."""
        div = self.take(atom, "div")
        if div is None or not _literal(div.invars[1], width):
            return None
        total = self.take(div.invars[0], "reduce_sum")
        if total is None or tuple(total.params["axes"]) != (total.invars[0].aval.ndim - 1,):
            return None
        return total.invars[0]

    def finish(self, root, emit) -> Fusion | None:
        """The fusion, if nothing outside the pattern reads an intermediate value."""
        taken = list({id(e): e for e in self.eqns}.values())  # a shared keepdims: once
        inside = {id(e) for e in taken} | {id(root)}
        reads: collections.Counter = collections.Counter()
        for eqn in (*taken, root):
            for atom in eqn.invars:
                if isinstance(atom, jcore.Var) and id(self.df.producer.get(atom)) in inside:
                    reads[atom] += 1
        for eqn in taken:
            for var in eqn.outvars:
                if self.df.uses[var] != reads[var]:
                    return None
        return Fusion(emit, frozenset(self.df.index[id(e)] for e in taken))


def _layer_norm(df: _Dataflow, root) -> Fusion | None:
    """``normalized [+ keep(bias)]`` over a static last axis (see :func:`_normalized`)."""
    if root.primitive.name not in ("add", "mul") or not _float32(root.outvars[0]):
        return None
    rank = root.outvars[0].aval.ndim
    width = root.outvars[0].aval.shape[-1] if rank else None
    if not rank or not isinstance(width, int):
        return None
    for body_atom, bias_atom in (_pairs(root) if root.primitive.name == "add" else [(None, None)]):
        m = _Match(df)
        bias, body = None, root
        if body_atom is not None:
            bias = m.row(bias_atom, rank, width)
            body = m.take(body_atom, "mul") if bias is not None else None
            if body is None:
                continue
        found = _normalized(m, body, rank, width)
        if found is None:
            continue
        x, scale, eps = found

        def emit(cv, read, x=x, scale=scale, bias=bias, eps=eps, width=width):
            inputs = [read(x), read(scale) if scale is not None
                      else cv.const(np.ones(width, np.float32))]
            if bias is not None:
                inputs.append(read(bias))
            return cv.op("LayerNormalization", *inputs, axis=-1, epsilon=eps)

        fusion = m.finish(root, emit)
        if fusion is not None:
            return fusion
    return None


def _normalized(m: _Match, body, rank: int, width: int):
    """``body`` = ``(x - mean) * (rsqrt(var + eps) [* scale])``: (x, scale or None, eps)."""
    for centered_atom, factor_atom in _pairs(body):
        mark = m.mark()
        centered = m.take(centered_atom, "sub")
        if centered is not None and isinstance(centered.invars[0], jcore.Var):
            x = centered.invars[0]
            if x.aval.ndim == rank and _float32(x):
                found = _factor(m, factor_atom, x, centered.invars[1], rank, width)
                if found is not None:
                    return (x, *found)
        m.undo(mark)
    return None


def _factor(m: _Match, atom, x, mean_expanded, rank: int, width: int):
    """``atom`` = ``rsqrt(var + eps) [* scale]`` with ``mean_expanded`` = the mean of ``x``
    kept to rank r: (scale or None, eps)."""
    scale = None
    inv = m.take(atom, "rsqrt")
    if inv is None:
        product = m.take(atom, "mul")
        if product is None:
            return None
        for inv_atom, scale_atom in _pairs(product):
            mark = m.mark()
            inv = m.take(inv_atom, "rsqrt")
            scale = m.row(scale_atom, rank, width) if inv is not None else None
            if scale is not None:
                break
            m.undo(mark)
            inv = None
        if inv is None:
            return None
    shifted = m.take(inv.invars[0], "add")
    if shifted is None:
        return None
    var_kept, eps = shifted.invars
    if not isinstance(eps, jcore.Literal) or np.ndim(eps.val):
        return None
    # the mean (rank r - 1) kept to rank r, once for the centring, once for the variance
    mean = m.kept(mean_expanded)
    var = m.kept(var_kept)
    if mean is None or var is None or mean[1] != rank - 1 or var[1] != rank - 1:
        return None
    (mean, _), (var, _) = mean, var
    if m.mean_last(mean, width) is not x:
        return None
    deviation = m.take(_squares(m, m.mean_last(var, width)), "sub")
    if deviation is None or deviation.invars[0] is not x:
        return None
    again = m.kept(deviation.invars[1])
    if again is None or again != (mean, rank - 1):
        return None
    return scale, float(eps.val)


def _squares(m: _Match, atom):
    """``atom`` = ``d * d`` (square, integer_pow 2 or mul of one value): returns d."""
    eqn = m.take(atom, "square", "integer_pow", "mul")
    if eqn is None:
        return None
    name = eqn.primitive.name
    if name == "square" or (name == "integer_pow" and eqn.params["y"] == 2):
        return eqn.invars[0]
    if name == "mul" and eqn.invars[0] is eqn.invars[1]:
        return eqn.invars[0]
    return None


def _softmax(df: _Dataflow, root) -> Fusion | None:
    """``exp(a - stop_gradient(keep(max(-inf, reduce_max(a, k))))) / keep(reduce_sum(., k))``."""
    if root.primitive.name != "div" or not _float32(root.outvars[0]):
        return None
    m = _Match(df)
    numerator, denominator = root.invars
    exp = m.take(numerator, "exp")
    if exp is None:
        return None
    shifted = m.take(exp.invars[0], "sub")
    if shifted is None or not isinstance(shifted.invars[0], jcore.Var):
        return None
    a = shifted.invars[0]
    axis = _kept_reduction(m, denominator, numerator, "reduce_sum")
    if axis is None or axis != _kept_max(m, shifted.invars[1], a):
        return None

    def emit(cv, read, a=a, axis=axis):
        return cv.op("Softmax", read(a), axis=axis)

    return m.finish(root, emit)


def _kept_reduction(m: _Match, atom, source, name: str):
    """``atom`` = ``name(source, axis k)`` kept to ``source``'s rank: returns k or None."""
    kept = m.kept(atom)
    if kept is None:
        return None
    reduced = m.take(kept[0], name)
    if reduced is None or reduced.invars[0] is not source or \
            tuple(reduced.params["axes"]) != (kept[1],):
        return None
    return kept[1]


def _kept_max(m: _Match, atom, a):
    """``atom`` = [stop_gradient] keep(max(-inf, reduce_max(a, k))): returns k or None."""
    stopped = m.take(atom, "stop_gradient")
    kept = m.kept(stopped.invars[0] if stopped is not None else atom)
    if kept is None:
        return None
    inner, axis = kept
    floor = m.take(inner, "max")
    if floor is not None:
        rest = [v for v in floor.invars if not _literal(v, -np.inf)]
        if len(rest) != 1:
            return None
        inner = rest[0]
    reduced = m.take(inner, "reduce_max")
    if reduced is None or reduced.invars[0] is not a or tuple(reduced.params["axes"]) != (axis,):
        return None
    return axis


def _gelu(df: _Dataflow, root) -> Fusion | None:
    """``a * (0.5 + 0.5 * erf(a * sqrt(1/2)))`` (``zoo.nn``'s exact GELU)."""
    if root.primitive.name != "mul" or not _float32(root.outvars[0]):
        return None
    for a, half_plus in _pairs(root):
        m = _Match(df)
        outer = m.take(half_plus, "add")
        if outer is None:
            continue
        halves = [v for v in outer.invars if not _literal(v, 0.5)]
        if len(halves) != 1:
            continue
        scaled = m.take(halves[0], "mul")
        if scaled is None:
            continue
        erfs = [v for v in scaled.invars if not _literal(v, 0.5)]
        erf = m.take(erfs[0], "erf") if len(erfs) == 1 else None
        inner = m.take(erf.invars[0], "mul") if erf is not None else None
        if inner is None or not any(v is a and _literal(w, SQRT_HALF)
                                    for v, w in _pairs(inner)):
            continue

        def emit(cv, read, a=a):
            x = read(a)
            if cv.opset >= 20:
                return cv.op("Gelu", x)
            f32 = lambda v: cv.const(np.float32(v))  # noqa: E731
            half_x = cv.op("Mul", x, f32(0.5))  # torch's form, which ORT fuses into Gelu
            erf = cv.op("Erf", cv.op("Div", x, f32(np.sqrt(2.0))))
            return cv.op("Mul", half_x, cv.op("Add", erf, f32(1.0)))

        fusion = m.finish(root, emit)
        if fusion is not None:
            return fusion
    return None


_MATCHERS = (_layer_norm, _softmax, _gelu)


def find_fusions(jaxpr: jcore.Jaxpr) -> dict[int, Fusion]:
    """The fused patterns of ``jaxpr``, by the index of their root (last) equation."""
    df = _Dataflow(jaxpr)
    found: dict[int, Fusion] = {}
    taken: set[int] = set()
    for i in reversed(range(len(jaxpr.eqns))):
        if i in taken:
            continue
        for matcher in _MATCHERS:
            fusion = matcher(df, jaxpr.eqns[i])
            if fusion is not None and not (fusion.inner & (taken | set(found))):
                found[i] = fusion
                taken |= fusion.inner
                break
    return found
