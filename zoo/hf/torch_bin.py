"""Reads PyTorch ``pytorch_model.bin`` state dicts (torch >= 1.6 zip format) without torch.

``torch.load`` unpickles ``data.pkl`` with the full power of pickle, so a downloaded ``.bin``
can run any code. This reader never imports torch and never lets pickle import anything
(see ``zoo.safe_pickle`` and ``shared/design/hf-checkpoints.md``):

1. the zip is checked from its central directory before any member is read: member names
   stay inside the archive, every member is stored uncompressed (torch never compresses,
   so a deflated member is a zip bomb until proven otherwise), declared sizes are capped,
   there is exactly one ``<top>/data.pkl``, and ``<top>/byteorder`` (if present) is little;
2. ``data.pkl`` is pre-scanned and unpickled against an allow-list: ``OrderedDict``, the two
   tensor rebuild functions and the plain numeric storage types, each mapped to a
   stand-in that only records checked arguments. A persistent id must name an existing
   ``<top>/data/<key>`` member whose size is exactly ``numel * itemsize``; a tensor's view
   (offset, sizes, strides) must stay inside its storage;
3. only then are the storages read (each once, only if a tensor uses it) and every tensor
   copied out into its own C-contiguous, native-order numpy array.
"""

from __future__ import annotations

import collections
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from zoo.safe_pickle import REFUSED_OPCODES, StandIn, UnsafePickleError, finish, unpickle

MAX_STORAGE_BYTES = 4 << 30  # one storage (a BERT-large embedding is ~125 MB)
MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a BERT-large state dict is ~30 KB
MAX_DIMS = 32  # numpy 1.x's limit
# Tensors are views of storages, so a state dict copies out about its storages' bytes (2x
# with tied weights). Stride-0 views or one tensor under many names could multiply memory
# from a few bytes, so the total copied out is capped relative to the archive's data (whose
# declared sizes cannot exceed the file's, see ``_check_members``).
OUTPUT_FACTOR, OUTPUT_SLACK = 4, 64 << 20

# torch's storage classes -> the little-endian dtype of their bytes. BFloat16 is read as its
# raw 16 bits and widened to float32; Bool bytes are normalized to 0/1.
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "u1",
}
ALLOWED_GLOBALS = tuple(sorted(
    ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
     "torch._utils._rebuild_parameter"] + [f"torch.{name}" for name in STORAGE_DTYPES]
))
# torch's pickles carry storages as BINPERSID; everything else stays refused.
_REFUSED_OPCODES = {k: v for k, v in REFUSED_OPCODES.items() if k != "BINPERSID"}
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")  # torch writes "0", "1", ...

LEGACY_MESSAGE = ("legacy (pre-1.6) torch pickle refused: re-save it with torch>=1.6 "
                  "or convert to safetensors")


def _brief(value) -> str:
    """A short, one-line description of an untrusted value (no deep repr)."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return repr(value)[:40]
    return type(value).__name__.lstrip("_")


# ------------------------------------------------------------------------- stand-ins


class _StorageType(StandIn):
    """What ``torch.FloatStorage`` etc. unpickle to: only ever part of a persistent id."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _Storage(StandIn):
    """A persistent id that passed its checks; the bytes are read later, if used."""

    __slots__ = ("key", "type", "numel", "member")

    def __init__(self, key: str, type_name: str, numel: int, member: zipfile.ZipInfo):
        self.key, self.type, self.numel, self.member = key, type_name, numel, member

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.type])


class _Tensor(StandIn):
    """A checked view (offset, shape, strides in elements) into a storage."""

    __slots__ = ("storage", "offset", "shape", "strides", "size")

    def __init__(self, storage: _Storage, offset: int, shape: tuple, strides: tuple):
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides
        self.size = math.prod(shape)


def _ordered_dict_class() -> type:
    """A per-load dict class for ``collections.OrderedDict`` (dicts keep insertion order)."""

    class OrderedDict(dict):
        __slots__ = ()

        def __init__(self):  # torch pickles OrderedDict() then SETITEMS
            super().__init__()

        def __setstate__(self, state):  # a state dict's ``_metadata`` (module versions)
            if not isinstance(state, dict) or not set(state) <= {"_metadata"}:
                raise UnsafePickleError(f"unexpected OrderedDict state {_brief(state)}")

    return OrderedDict


def _check_grad(requires_grad, backward_hooks) -> None:
    if type(requires_grad) is not bool:
        raise UnsafePickleError(f"requires_grad is {_brief(requires_grad)}, expected a bool")
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise UnsafePickleError("refused tensor with backward hooks")


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int for v in value):
        raise UnsafePickleError(f"tensor {what} is not a tuple of ints")
    return value


class _RebuildTensorV2(StandIn):
    """``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``."""

    __slots__ = ()

    def __call__(self, storage, storage_offset, size, stride, requires_grad, backward_hooks,
                 metadata=None):
        if not isinstance(storage, _Storage):
            raise UnsafePickleError(f"tensor storage is {_brief(storage)}, not a storage id")
        _check_grad(requires_grad, backward_hooks)
        if metadata is not None and (not isinstance(metadata, dict) or metadata):
            raise UnsafePickleError("refused tensor with python metadata")
        if type(storage_offset) is not int or storage_offset < 0:
            raise UnsafePickleError(f"bad tensor storage offset {_brief(storage_offset)}")
        size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
        if len(size) != len(stride) or len(size) > MAX_DIMS:
            raise UnsafePickleError(f"tensor size {size} and stride {stride} do not match")
        if any(d < 0 for d in size):
            raise UnsafePickleError(f"negative tensor size {size}")
        if any(s < 0 for s in stride):
            raise UnsafePickleError(f"negative tensor stride {stride}")
        tensor = _Tensor(storage, storage_offset, size, stride)
        if tensor.size == 0:
            if storage_offset > storage.numel:
                raise UnsafePickleError(
                    f"tensor offset {storage_offset} beyond its storage of {storage.numel}")
        else:
            last = storage_offset + sum((d - 1) * s for d, s in zip(size, stride))
            if last >= storage.numel:
                raise UnsafePickleError(
                    f"tensor view (offset {storage_offset}, size {size}, stride {stride}) "
                    f"reaches element {last} of a storage of {storage.numel}")
        return tensor


class _RebuildParameter(StandIn):
    """``_rebuild_parameter(tensor, requires_grad, hooks)``: a Parameter is its tensor."""

    __slots__ = ()

    def __call__(self, data, requires_grad, backward_hooks):
        if not isinstance(data, _Tensor):
            raise UnsafePickleError(f"parameter wraps {_brief(data)}, not a tensor")
        _check_grad(requires_grad, backward_hooks)
        return data


def _fresh_standins() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _ordered_dict_class(),
        ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensorV2(),
        ("torch._utils", "_rebuild_parameter"): _RebuildParameter(),
    }
    for name in STORAGE_DTYPES:
        table[("torch", name)] = _StorageType(name)
    return table


# ------------------------------------------------------------------------- the archive


def _escapes(name: str) -> bool:
    parts = name.split("/")
    return (name.startswith("/") or "\\" in name or ":" in parts[0] or ".." in parts
            or "\0" in name)


def _data_pkl_names(names) -> list[str]:
    return [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]


def _check_members(zf: zipfile.ZipFile, file_size: int, max_storage_bytes: int,
                   max_pickle_bytes: int) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """Central-directory checks before any member is read: (top folder, name -> info)."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        if _escapes(name):
            raise UnsafePickleError(f"refused member name {name!r} (escapes the archive)")
        if name in members:
            raise UnsafePickleError(f"member {name!r} appears twice")
        if info.flag_bits & 0x1:
            raise UnsafePickleError(f"member {name!r} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise UnsafePickleError(
                f"refused compressed member {name!r} (method {info.compress_type}): torch "
                "stores members uncompressed; nothing was inflated")
        cap = max_pickle_bytes if name.endswith("/data.pkl") else max_storage_bytes
        if info.file_size > cap or info.compress_size != info.file_size:
            raise UnsafePickleError(
                f"member {name!r} declares {info.file_size} bytes (the cap is {cap})")
        members[name] = info
    if sum(info.file_size for info in members.values()) > file_size:  # entries share bytes
        raise UnsafePickleError("members declare more bytes than the archive holds")
    pickles = _data_pkl_names(members)
    if not pickles:
        raise UnsafePickleError("no <top>/data.pkl member: not a torch checkpoint")
    if len(pickles) > 1:
        raise UnsafePickleError(f"more than one data.pkl member ({', '.join(pickles[:4])})")
    return pickles[0].split("/")[0], members


class _Archive:
    """Resolves persistent ids against the archive's members (sizes only, no bytes read)."""

    def __init__(self, top: str, members: dict[str, zipfile.ZipInfo]):
        self.top, self.members = top, members
        self.storages: dict[str, _Storage] = {}

    def persistent_load(self, pid) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"refused persistent id {_brief(pid)}")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"storage type is {_brief(storage_type)}, not a torch storage")
        if type(key) is not str or not _STORAGE_KEY.fullmatch(key):
            raise UnsafePickleError(f"refused storage key {_brief(key)}")
        if type(location) is not str or type(numel) is not int or numel < 0:
            raise UnsafePickleError(f"bad location or numel in storage {key!r}")
        known = self.storages.get(key)
        if known is not None:
            if (known.type, known.numel) != (storage_type.name, numel):
                raise UnsafePickleError(f"storage {key!r} is declared with two types or sizes")
            return known
        name = f"{self.top}/data/{key}"
        member = self.members.get(name)
        if member is None:
            raise UnsafePickleError(f"storage {key!r} has no member {name!r}")
        storage = _Storage(key, storage_type.name, numel, member)
        expected = numel * storage.dtype.itemsize
        if member.file_size != expected:
            raise UnsafePickleError(
                f"member {name!r} holds {member.file_size} bytes, {numel} x "
                f"{storage_type.name} needs {expected}")
        self.storages[key] = storage
        return storage


def _top_tensors(obj) -> dict[str, _Tensor]:
    """The state dict: ``{name: tensor}``, or one wrapped under "state_dict" / "model"."""
    if (isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in ("state_dict", "model")
            and isinstance(next(iter(obj.values())), dict)):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict):
        raise UnsafePickleError(f"the pickle holds {_brief(obj)}, expected a state dict")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _Tensor):
            raise UnsafePickleError(
                f"state dict entry {_brief(name)} is {_brief(value)}, expected name -> tensor")
    return obj


def _copy_out(tensor: _Tensor, raw: bytes) -> np.ndarray:
    """The tensor as an owned, C-contiguous, native-order array (the view was checked)."""
    dtype, kind = tensor.storage.dtype, tensor.storage.type
    if tensor.size == 0:
        array = np.empty(tensor.shape, dtype.newbyteorder("="))
    else:
        base = np.frombuffer(raw, dtype=dtype)[tensor.offset:]
        strides = tuple(0 if d == 1 else s * dtype.itemsize
                        for d, s in zip(tensor.shape, tensor.strides))
        view = as_strided(base, shape=tensor.shape, strides=strides, writeable=False)
        array = np.array(view, dtype=dtype.newbyteorder("="), order="C", copy=True)
    if kind == "BoolStorage":
        return array != 0
    if kind == "BFloat16Storage":  # bfloat16 is the high half of a float32
        widened = np.empty(array.shape, np.float32)
        widened.view(np.uint32)[...] = array.astype(np.uint32) << 16
        return widened
    return array


def _read(zf: zipfile.ZipFile, file_size: int, max_storage_bytes: int,
          max_pickle_bytes: int) -> dict[str, np.ndarray]:
    top, members = _check_members(zf, file_size, max_storage_bytes, max_pickle_bytes)
    byteorder = members.get(f"{top}/byteorder")
    if byteorder is not None:
        order = zf.read(byteorder).strip() if byteorder.file_size <= 16 else b"?"
        if order != b"little":
            raise UnsafePickleError(f"refused byte order {order[:16]!r} (only little-endian)")
    archive = _Archive(top, members)
    obj, _, _ = unpickle(zf.read(members[f"{top}/data.pkl"]), _fresh_standins(),
                         persistent_load=archive.persistent_load, refused=_REFUSED_OPCODES)
    tensors = _top_tensors(finish(obj, {_Tensor: lambda t: t}))

    data_bytes = sum(s.member.file_size for s in archive.storages.values())
    budget = OUTPUT_FACTOR * data_bytes + OUTPUT_SLACK
    needed = sum(t.size * (4 if t.storage.type == "BFloat16Storage" else t.storage.dtype.itemsize)
                 for t in tensors.values())
    if needed > budget:
        raise UnsafePickleError(
            f"tensors would take {needed} bytes from {data_bytes} bytes of storage")

    uses = collections.Counter(t.storage.key for t in tensors.values() if t.size)
    raw: dict[str, bytes] = {}
    result = {}
    for name, tensor in tensors.items():
        key = tensor.storage.key
        if tensor.size and key not in raw:
            raw[key] = zf.read(tensor.storage.member)  # CRC-checked by zipfile
        result[name] = _copy_out(tensor, raw.get(key, b""))
        if tensor.size:
            uses[key] -= 1
            if not uses[key]:
                del raw[key]  # the last tensor using it: free the bytes early
    return result


# ------------------------------------------------------------------------- public


def is_torch_zip(path: str | Path) -> bool:
    """Whether ``path`` is a zip with exactly one ``<top>/data.pkl`` (only the index is read)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return len(_data_pkl_names(zf.namelist())) == 1
    except (zipfile.BadZipFile, OSError):
        return False


def read_torch_bin(path: str | Path, *, max_storage_bytes: int = MAX_STORAGE_BYTES,
                   max_pickle_bytes: int = MAX_PICKLE_BYTES) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``torch.save``-d state dict, nothing in it executed.

    Arrays are native-order, C-contiguous and own their data; bfloat16 becomes float32.
    Raises ``UnsafePickleError`` ("<path>: <problem>") for anything outside the format.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(4)
            if head != b"PK\x03\x04":
                if head[:1] == b"\x80":  # a pickle PROTO opcode: torch's legacy format
                    raise UnsafePickleError(LEGACY_MESSAGE)
                raise UnsafePickleError("not a torch checkpoint (not a zip archive)")
            with zipfile.ZipFile(file) as zf:
                return _read(zf, os.fstat(file.fileno()).st_size, max_storage_bytes,
                             max_pickle_bytes)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise UnsafePickleError(f"{path}: corrupt zip archive ({err})") from None
