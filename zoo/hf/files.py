"""HuggingFace checkpoint folders: what a folder must hold, JSON files, and the weights.

Weights are ``model.safetensors`` (preferred) or ``pytorch_model.bin``, each whole or in
shards listed by its ``.index.json`` (``weight_map``: tensor name -> shard file, as
``save_pretrained`` writes a model above ``max_shard_size``). Neither is read
with ``pickle.load``: safetensors is a JSON header plus raw little-endian arrays, read here
with every offset and byte count checked; ``.bin`` goes through the allow-listed reader in
``zoo.hf.torch_bin``. Half-precision tensors (float16, bfloat16) become float32.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np

from zoo.errors import ConfigError
from zoo.fsutil import read_json
from zoo.registry import WeightsNotFoundError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The index of each weight file's shards, in the same order of preference.
INDEX_FILES = tuple(f"{name}.index.json" for name in WEIGHT_FILES)
# What a download fetches besides the weights (absent files are fine).
SMALL_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
               "special_tokens_map.json")
MAX_HEADER = 100 << 20  # a safetensors header (JSON) larger than this is refused
# safetensors dtype -> (numpy dtype read from the file, itemsize)
SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1",
}


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / name).is_file() for name in WEIGHT_FILES + INDEX_FILES)


def check_complete(path: Path) -> None:
    """One line naming what a folder lacks to be an HF checkpoint (config, weights)."""
    if not path.is_dir():
        raise WeightsNotFoundError(f"{path} is not a folder; expected a HuggingFace checkpoint "
                                   "folder (config.json and model.safetensors or "
                                   "pytorch_model.bin)")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in WEIGHT_FILES + INDEX_FILES):
        missing.append(" or ".join(WEIGHT_FILES) + " (or their shards' .index.json)")
    if missing:
        raise WeightsNotFoundError(
            f"{path} is not a complete HuggingFace checkpoint: it lacks {' and '.join(missing)} "
            "(copy the whole folder, or pass a hub id owner/name to download it)")


def weights_file(path: Path) -> Path:
    """The folder's weights: ``model.safetensors``, else ``pytorch_model.bin``, else the
    shard index of either (in that order)."""
    for name in WEIGHT_FILES + INDEX_FILES:
        if (path / name).is_file():
            return path / name
    raise WeightsNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin (nor "
                               "an .index.json of their shards)")


def shards(index: Path, *, present: bool = True) -> dict[str, list[str]]:
    """{shard file name: the tensor names it must hold} of a shard index, checked: a JSON
    object whose ``weight_map`` maps names to plain file names beside the index, of the
    index's own kind (and, with ``present``, each there)."""
    kind = index.name[:-len(".index.json")]
    suffix = Path(kind).suffix  # .safetensors or .bin

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{index}: not a valid shard index ({why})")

    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise bad("expected a JSON object with a non-empty 'weight_map'")
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", "..") \
                or not shard.endswith(suffix):
            raise bad(f"{name!r} maps to {shard!r}, not a {suffix} file beside the index")
        by_shard.setdefault(shard, []).append(name)
    for shard in by_shard if present else ():
        if not (index.parent / shard).is_file():
            raise WeightsNotFoundError(f"{index.parent / shard}: missing (the index "
                                       f"{index.name} lists it; copy every shard)")
    return by_shard


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Tensors of ``model.safetensors`` (preferred), ``pytorch_model.bin`` or the shards
    of either in ``path``; a shard must hold exactly the tensors its index assigns it."""
    file = weights_file(path)
    if file.name not in INDEX_FILES:
        return _read_one(file)
    tensors: dict[str, np.ndarray] = {}
    for shard, names in sorted(shards(file).items()):
        found = _read_one(file.parent / shard)
        if set(found) != set(names):
            extra, missing = sorted(set(found) - set(names)), sorted(set(names) - set(found))
            raise ConfigError(
                f"{file.parent / shard}: does not hold what {file.name} lists for it "
                f"({len(missing)} missing, e.g. {missing[:1]}; {len(extra)} not listed, "
                f"e.g. {extra[:1]})")
        tensors.update(found)
    return tensors


def _read_one(file: Path) -> dict[str, np.ndarray]:
    if file.suffix == ".safetensors":
        return read_safetensors(file)
    from zoo.hf.torch_bin import read_torch_bin

    return read_torch_bin(file)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as native-order arrays (half precision as float32).

    The header is checked before any tensor is read: its size, that it is a JSON object of
    known dtypes and integer shapes, and that each tensor's byte range lies inside the data
    and is exactly ``prod(shape) * itemsize`` long, without overlaps.
    """
    size = path.stat().st_size

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{path}: not a valid safetensors file ({why})")

    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise bad("shorter than its 8-byte header length")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER, size - 8):
            raise bad(f"header length {header_len} exceeds the file or {MAX_HEADER} bytes")
        try:
            header = json.loads(handle.read(header_len).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise bad(f"header is not JSON: {err}") from None
        except RecursionError:
            raise bad("header is not JSON: nested too deeply") from None
        if not isinstance(header, dict):
            raise bad("header is not a JSON object")
        header.pop("__metadata__", None)
        data_start, data_len = 8 + header_len, size - 8 - header_len
        entries = []
        for name, entry in header.items():
            if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
                raise bad(f"entry {name!r} is not {{dtype, shape, data_offsets}}")
            dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
            if dtype not in SAFETENSORS_DTYPES:
                raise bad(f"{name}: dtype {dtype!r} is not supported "
                          f"({', '.join(SAFETENSORS_DTYPES)})")
            if not (isinstance(shape, list) and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise bad(f"{name}: shape {shape!r} is not a list of sizes")
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                    isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
                raise bad(f"{name}: data_offsets {offsets!r} is not [begin, end]")
            begin, end = offsets
            nbytes = math.prod(shape) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
            if not 0 <= begin <= end <= data_len or end - begin != nbytes:
                raise bad(f"{name}: bytes [{begin}, {end}) do not hold shape {shape} of {dtype} "
                          f"inside the {data_len}-byte data")
            entries.append((begin, end, name, dtype, tuple(shape)))
        entries.sort()
        for (_, end, name, *_), (begin, _, other, *_) in zip(entries, entries[1:]):
            if begin < end:
                raise bad(f"{name} and {other} overlap")
        tensors = {}
        for begin, end, name, dtype, shape in entries:
            handle.seek(data_start + begin)
            raw = np.frombuffer(handle.read(end - begin), SAFETENSORS_DTYPES[dtype])
            if dtype == "BF16":  # bfloat16 is the high half of a float32
                array = (raw.astype(np.uint32) << 16).view(np.float32)
            elif dtype == "BOOL":
                array = raw.astype(bool)
            else:
                array = raw.astype(raw.dtype.newbyteorder("="))
            tensors[name] = np.ascontiguousarray(array.reshape(shape))
    return tensors


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(path: Path) -> str:
    """sha256 of the folder's weight file; of sharded weights, of their shards' digests
    (one line each, ``<sha256>  <file>``, in name order) after the index's own."""
    index = weights_file(path)
    if index.name not in INDEX_FILES:
        return sha256(index)
    files = [index, *(index.parent / shard for shard in sorted(shards(index)))]
    lines = [f"{sha256(f)}  {f.name}\n" for f in files]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
