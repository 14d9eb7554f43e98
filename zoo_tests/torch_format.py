"""Writes ``torch.save``-format state dicts (torch >= 1.6 zip) without torch, for tests.

``data.pkl`` is written by ``pickle`` itself: tensors reduce to functions and storage
classes that are registered under ``torch`` / ``torch._utils`` in ``sys.modules`` only
while pickling (pickle records the module path of whatever ``__reduce__`` returns), and
storages become persistent ids ``("storage", torch.<Type>Storage, key, "cpu", numel)``
as torch writes them. Every part can be bent for hostile cases: storage types, keys,
declared numels, member bytes, views (offset, strides), hooks, compression, extra members.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

_STORAGE_OF_DTYPE = {
    "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
    "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
}


@dataclasses.dataclass(eq=False)
class Storage:
    """One ``data/<key>`` member: the bytes of the 1-D ``data`` (or ``raw``), little-endian."""

    data: np.ndarray
    storage_type: str | None = None  # default: from data's dtype ("BFloat16Storage" for raw)
    key: str | None = None  # default: "0", "1", ... in order of first use
    numel: int | None = None  # the declared element count; default data.size
    raw: bytes | None = None  # the member's bytes; default data's bytes

    def member_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        data = np.asarray(self.data).reshape(-1)
        if data.dtype == bool:
            data = data.view(np.uint8)
        return data.astype(data.dtype.newbyteorder("<")).tobytes()


@dataclasses.dataclass(eq=False)
class Tensor:
    """A view into a storage, pickled as torch pickles a tensor (or a Parameter)."""

    storage: Storage
    offset: int
    shape: tuple
    stride: tuple
    requires_grad: bool = False
    hooks: Mapping | None = None  # default: an empty OrderedDict
    metadata: Mapping | None = None  # appended as a 7th argument when given
    parameter: bool = False  # wrap in torch._utils._rebuild_parameter

    def __reduce__(self):
        hooks = collections.OrderedDict() if self.hooks is None else self.hooks
        args = (self.storage, self.offset, tuple(self.shape), tuple(self.stride),
                self.requires_grad, hooks)
        if self.metadata is not None:
            args += (self.metadata,)
        if not self.parameter:
            return _rebuild_tensor_v2, args
        inner = dataclasses.replace(self, parameter=False)
        return _rebuild_parameter, (inner, self.requires_grad, collections.OrderedDict())


def contiguous_strides(shape: tuple) -> tuple:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def tensor(array: np.ndarray, **kwargs) -> Tensor:
    """A contiguous tensor with its own storage (``kwargs`` go to ``Storage``)."""
    array = np.asarray(array)
    return Tensor(Storage(array.reshape(-1), **kwargs), 0, array.shape,
                  contiguous_strides(array.shape))


def bfloat16(raw: np.ndarray) -> Tensor:
    """A bfloat16 tensor from its raw 16-bit patterns (uint16)."""
    return tensor(np.asarray(raw, np.uint16), storage_type="BFloat16Storage")


# ------------------------------------------------------------------------- pickling


def _rebuild_tensor_v2(*args):  # pickled by path only
    raise AssertionError("never called")


def _rebuild_parameter(*args):  # pickled by path only
    raise AssertionError("never called")


_STORAGE_CLASSES: dict[str, type] = {}


def storage_class(name: str) -> type:
    """The class pickled as ``torch.<name>`` (any name, so tests can use unknown ones)."""
    if name not in _STORAGE_CLASSES:
        _STORAGE_CLASSES[name] = type(name, (), {"__module__": "torch"})
    return _STORAGE_CLASSES[name]


@contextlib.contextmanager
def _torch_modules():
    """Temporarily make ``torch`` and ``torch._utils.*`` importable for pickle."""
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    torch._utils = utils
    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__, fn.__qualname__ = "torch._utils", fn.__name__
        setattr(utils, fn.__name__, fn)
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _TorchPickler(pickle.Pickler):
    def __init__(self, file, protocol: int):
        super().__init__(file, protocol=protocol)
        self.storages: dict[str, Storage] = {}
        self._keys: dict[int, str] = {}

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        key = self._keys.get(id(obj))
        if key is None:
            key = obj.key if obj.key is not None else str(len(self._keys))
            self._keys[id(obj)] = key
            self.storages[key] = obj
        type_name = obj.storage_type or _STORAGE_OF_DTYPE[np.asarray(obj.data).dtype.name]
        numel = obj.numel if obj.numel is not None else np.asarray(obj.data).size
        cls = storage_class(type_name)
        setattr(sys.modules["torch"], type_name, cls)  # pickle looks it up by path
        return ("storage", cls, key, "cpu", numel)


def dumps_state_dict(obj: Any, protocol: int = 2) -> tuple[bytes, dict[str, Storage]]:
    """(``data.pkl`` bytes, key -> storage) for ``obj``; ndarray values become tensors."""
    if isinstance(obj, Mapping):
        state = collections.OrderedDict(
            (k, tensor(v) if isinstance(v, np.ndarray) else v) for k, v in obj.items())
        state._metadata = collections.OrderedDict([("", {"version": 1})])  # as nn.Module does
        obj = state
    buffer = io.BytesIO()
    with _torch_modules():
        pickler = _TorchPickler(buffer, protocol)
        pickler.dump(obj)
    return buffer.getvalue(), pickler.storages


def write_torch_bin(path: str | Path, tensors: Any, *, top: str = "archive", protocol: int = 2,
                    data_pkl: bytes | None = None, members: Mapping[str, bytes | None] = (),
                    compress: tuple[str, ...] = (), byteorder: str | None = "little") -> Path:
    """Write ``tensors`` ({name: ndarray | Tensor | any picklable}, or any object) as torch does.

    ``data_pkl`` replaces the pickle's bytes; ``members`` adds members by full name (``None``
    removes one); names in ``compress`` are written ZIP_DEFLATED.
    """
    pickled, storages = dumps_state_dict(tensors, protocol)
    files: dict[str, bytes | None] = {f"{top}/data.pkl": pickled if data_pkl is None else data_pkl}
    if byteorder is not None:
        files[f"{top}/byteorder"] = byteorder.encode()
    for key, storage in storages.items():
        files[f"{top}/data/{key}"] = storage.member_bytes()
    files[f"{top}/version"] = b"3\n"
    files.update(members)
    path = Path(path)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            if data is not None:
                method = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def patch_declared_size(path: str | Path, member: str, size: int) -> None:
    """Make the central directory claim ``size`` bytes for ``member`` (a lying header)."""
    data = bytearray(Path(path).read_bytes())
    name = member.encode()
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + name_len] == name:
            struct.pack_into("<II", data, pos + 20, size, size)  # compressed, uncompressed
            Path(path).write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise KeyError(member)
