"""An allow-listed unpickler for the 2022 Haiku training-state pickles.

Pickle is a code-execution format, and the published checkpoint would not even load
today with plain ``pickle.load`` (jax modules that no longer exist, a ``named_shape``
argument today's jax rejects). So the file is read without importing haiku, jax or optax:

1. the bytes are pre-scanned with ``pickletools.genops``: opcodes a checkpoint never
   needs (persistent ids, extension codes, INST/OBJ, out-of-band buffers) are refused,
   length fields longer than the rest of the file are refused before anything is
   allocated, and MARK nesting is capped;
2. ``find_class`` allows exactly the globals that 2022 writers produced (see
   ``shared/design/haiku-original.md``) and maps each to a harmless stand-in: arrays are
   rebuilt as plain ``numpy.ndarray`` from checked raw bytes (numeric/bool dtypes only, byte
   count = prod(shape) * itemsize), optax states and ``TrainingState`` become plain
   NamedTuples, ``FlatMapping`` becomes ``dict``;
3. the result is walked once (depth-capped, cycle-checked) to finish the arrays and to
   refuse any object the stand-ins did not produce.

Stand-ins are slot-only callables or per-load classes, so a hostile BUILD cannot alter
them for later loads. The format-neutral machinery (pre-scan, allow-list unpickler, walk)
lives in ``zoo.safe_pickle``; this module holds the Haiku allow-list and stand-ins.
"""

from __future__ import annotations

import collections
import hashlib
import math
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from zoo.safe_pickle import (  # noqa: F401  (MAX_DEPTH, prescan: public names of this module)
    MAX_DEPTH,
    REFUSED_OPCODES,
    UnsafePickleError,
    finish,
    prescan,
    unpickle,
)

# Plain numeric and bool dtypes, as numpy pickles them ('f4', 'i8', 'b1', ...).
_SAFE_DTYPE = re.compile(r"^(b1|[iu][1248]|f[248]|c(8|16))$")


class CheckpointInfo(NamedTuple):
    """Provenance of a loaded training-state file (the optimizer state is not kept)."""

    file: str
    sha256: str
    size: int
    protocol: int
    globals: tuple[str, ...]  # the allow-listed globals the file used
    has_opt_state: bool


# ------------------------------------------------------------------------- stand-ins


class _NdarrayMarker:
    """What ``numpy.ndarray`` unpickles to: only ever an argument of ``_reconstruct``."""

    __slots__ = ()


class _PendingArray:
    """``_reconstruct``'s result; BUILD (``__setstate__``) fills it from checked bytes."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        self.array = array_from_state(state)


class _PendingDtype:
    """``numpy.dtype(spec)``'s result; BUILD may only set a byte order."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise UnsafePickleError(f"unexpected dtype state {state!r:.80}")
        byteorder, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise UnsafePickleError("refused structured or subarray dtype")
        if byteorder not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"bad dtype byte order {byteorder!r}")
        if byteorder in "<>":
            self.dtype = self.dtype.newbyteorder(byteorder)


def _check_dtype(dtype) -> np.dtype:
    if not isinstance(dtype, _PendingDtype):
        raise UnsafePickleError(f"array dtype {type(dtype).__name__} is not a plain numpy dtype")
    return dtype.dtype


def array_from_state(state) -> np.ndarray:
    """numpy's pickled array state ``(version, shape, dtype, is_fortran, raw)``, checked."""
    if not isinstance(state, tuple) or len(state) != 5:
        raise UnsafePickleError(f"unexpected array state {type(state).__name__}")
    _, shape, dtype, is_fortran, raw = state
    dtype = _check_dtype(dtype)
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
        raise UnsafePickleError(f"bad array shape {shape!r:.80}")
    if not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError(f"array data is {type(raw).__name__}, expected bytes")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise UnsafePickleError(
            f"array of shape {shape} {dtype} needs {expected} bytes, the file holds {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if is_fortran else "C")
    return array.astype(dtype.newbyteorder("="), copy=True)  # native order, writable, owns data


class _Reconstruct:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: an empty array shell."""

    __slots__ = ()

    def __call__(self, subtype, shape, typecode):
        if not isinstance(subtype, _NdarrayMarker) or shape != (0,):
            raise UnsafePickleError("numpy _reconstruct called with unexpected arguments")
        return _PendingArray()


class _Dtype:
    """``numpy.dtype(spec, align, copy)`` for plain numeric and bool dtypes only."""

    __slots__ = ()

    def __call__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or not _SAFE_DTYPE.match(spec):
            raise UnsafePickleError(f"refused dtype {spec!r:.40} (only numeric and bool dtypes)")
        return _PendingDtype(np.dtype(spec))


class _JaxArray:
    """jax's ``reconstruct_device_array`` / ``_reconstruct_array(fun, args, arr_state, aval)``.

    ``aval`` (weak_type, and ``named_shape`` before jax 0.4.31) is accepted and ignored.
    """

    __slots__ = ()

    def __call__(self, fun, args, arr_state, aval_state=None):
        if not isinstance(fun, _Reconstruct) or not isinstance(args, tuple):
            raise UnsafePickleError("jax array reconstruction with unexpected arguments")
        shell = fun(*args)
        shell.__setstate__(arr_state)
        return shell.array


class _Latin1Encode:
    """``_codecs.encode(text, 'latin1')``: how protocol 2 writes bytes."""

    __slots__ = ()

    def __call__(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError("_codecs.encode is allowed only as str -> latin1 bytes")
        return text.encode("latin1")


class _FlatMapping:
    """haiku <= 0.0.5's ``FlatMapping(mapping)`` -> ``dict``."""

    __slots__ = ()

    def __call__(self, *args):
        if len(args) != 1 or not isinstance(args[0], dict):
            raise UnsafePickleError("FlatMapping with unexpected arguments")
        return dict(args[0])


def _fresh_standins() -> dict[tuple[str, str], Any]:
    """The allow-list. Classes are created per load so a BUILD on them cannot persist."""
    training_state = collections.namedtuple("TrainingState", ["params", "opt_state"])
    empty_state = collections.namedtuple("EmptyState", [])
    adam_state = collections.namedtuple("ScaleByAdamState", ["count", "mu", "nu"])
    reconstruct, jax_array = _Reconstruct(), _JaxArray()
    return {
        ("__main__", "TrainingState"): training_state,
        ("jax._src.device_array", "reconstruct_device_array"): jax_array,
        ("jax._src.array", "_reconstruct_array"): jax_array,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): _NdarrayMarker(),
        ("numpy", "dtype"): _Dtype(),
        ("optax._src.base", "EmptyState"): empty_state,
        ("optax._src.transform", "ScaleByAdamState"): adam_state,
        ("haiku._src.data_structures", "FlatMapping"): _FlatMapping(),
        ("_codecs", "encode"): _Latin1Encode(),
    }


ALLOWED_GLOBALS = tuple(sorted(f"{m}.{n}" for m, n in _fresh_standins()))


def _array_of(pending: _PendingArray) -> np.ndarray:
    if pending.array is None:
        raise UnsafePickleError("array without data")
    return pending.array


def loads(data: bytes) -> tuple[Any, int, tuple[str, ...]]:
    """Unpickle trusted-format ``data``: (object, protocol, allow-listed globals used)."""
    obj, protocol, used = unpickle(data, _fresh_standins(), refused=REFUSED_OPCODES)
    return finish(obj, {_PendingArray: _array_of}), protocol, used


# ------------------------------------------------------------------------- checkpoints


def _check_params(params) -> dict[str, dict[str, np.ndarray]]:
    if not isinstance(params, Mapping):
        raise UnsafePickleError(f"params is {type(params).__name__}, expected a mapping")
    for module, leaves in params.items():
        if not isinstance(module, str) or not isinstance(leaves, Mapping):
            raise UnsafePickleError(f"params entry {module!r:.80} is not module -> {{name: array}}")
        for name, value in leaves.items():
            if not isinstance(name, str) or not isinstance(value, np.ndarray):
                raise UnsafePickleError(f"params {module}/{name!r:.40} is not an array")
    return {module: dict(leaves) for module, leaves in params.items()}


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], CheckpointInfo]:
    """``({module: {param: array}}, info)`` from a pickled Haiku ``TrainingState``.

    Also accepts a pickle of the bare params dict. The optimizer state is read (it is part
    of the same stream) but only its presence is reported.
    """
    path = Path(path)
    data = path.read_bytes()
    obj, protocol, used = loads(data)
    if getattr(obj, "_fields", None) == ("params", "opt_state"):
        params, has_opt_state = obj.params, True
    elif isinstance(obj, dict):
        params, has_opt_state = obj, False
    else:
        raise UnsafePickleError(
            "expected a TrainingState(params, opt_state) or a params dict, "
            f"found {type(obj).__name__}"
        )
    info = CheckpointInfo(path.name, hashlib.sha256(data).hexdigest(), len(data), protocol,
                          used, has_opt_state)
    return _check_params(params), info
