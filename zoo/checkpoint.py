"""The model directory format and strict parameter I/O (one place for both).

A model directory (written by the converter and by the trainer's export) holds::

    zoo.json         what it is: model name, config, heads present, parameter count, provenance
    params/          an orbax checkpoint of {"encoder": {...}, "heads": {name: {...}}}
    tokenizer.json   the encoder's tokenizer, when known

Only ``nnx.Param`` leaves are stored (no RNG state, no constants). Parameter paths are
'/'-joined strings such as ``encoder/blocks/0/attention/query/kernel``. Restore is strict:
every expected parameter must be present with the right shape and dtype, nothing
unexpected may be present, and all problems are reported in one error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

FORMAT = "zoo-model/1"
MANIFEST = "zoo.json"
PARAMS = "params"
TOKENIZER = "tokenizer.json"


class CheckpointMismatchError(ValueError):
    """Raised with a full report when a checkpoint does not fit the model."""


# ---------------------------------------------------------------------------- flat trees


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {'a/b/c': leaf}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def state_values(state: nnx.State, prefix: str = "") -> dict[str, Any]:
    """An NNX state as {'path': value}; works for modules' and optimizers' states alike."""
    return {
        prefix + "/".join(map(str, path)): var.get_value()
        for path, var in nnx.to_flat_state(state)
    }


def fill_state(state: nnx.State, flat: Mapping[str, Any], prefix: str = "") -> nnx.State:
    """Write {'path': array} into ``state`` in place (strictly check ``flat`` first)."""
    for path, var in nnx.to_flat_state(state):
        var.set_value(jax.numpy.asarray(flat[prefix + "/".join(map(str, path))]))
    return state


def module_params(module: nnx.Module, prefix: str = "") -> dict[str, Any]:
    """The module's ``nnx.Param`` values as {'path': array} (abstract or concrete)."""
    return state_values(nnx.state(module, nnx.Param), prefix)


def assign_params(module: nnx.Module, flat: Mapping[str, Any], prefix: str = "") -> None:
    """Write {'path': array} into the module's params in place (paths must already match)."""
    nnx.update(module, fill_state(nnx.state(module, nnx.Param), flat, prefix))


def check_tree(
    expected: Mapping[str, Any], found: Mapping[str, Any], *, source: str
) -> None:
    """Compare flat {path: array-like} trees by name, shape and dtype; raise one report."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = []
    for path in sorted(set(expected) & set(found)):
        want, got = expected[path], found[path]
        want_sig = (tuple(want.shape), np.dtype(want.dtype))
        got_sig = (tuple(got.shape), np.dtype(got.dtype))
        if want_sig != got_sig:
            mismatched.append(
                f"{path}: expected {want_sig[0]} {want_sig[1]}, found {got_sig[0]} {got_sig[1]}"
            )
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit the model:"]
        for title, items in (
            ("missing", missing), ("unexpected", unexpected), ("wrong shape or dtype", mismatched)
        ):
            if items:
                lines.append(f"  {len(items)} {title}:")
                lines.extend(f"    {item}" for item in items)
        raise CheckpointMismatchError("\n".join(lines))


# ---------------------------------------------------------------------------- directory I/O


def save_model_dir(
    directory: str | Path,
    params: Mapping[str, Any],
    manifest: Mapping[str, Any],
    tokenizer: str | Path | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a model directory atomically (to a sibling temp dir, then rename).

    ``params`` is flat: {'encoder/...': array, 'heads/<name>/...': array}.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).expanduser().resolve()
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tree = unflatten({k: np.asarray(v) for k, v in params.items()})
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp / PARAMS, tree)
        checkpointer.wait_until_finished()
    manifest = {"format": FORMAT, **manifest}
    manifest["num_params"] = int(sum(np.size(v) for v in params.values()))
    manifest["tokenizer"] = TOKENIZER if tokenizer else None
    if tokenizer:
        shutil.copyfile(tokenizer, tmp / TOKENIZER)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if directory.exists():
        if not overwrite:
            raise FileExistsError(f"{directory} already exists")
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def read_manifest(directory: str | Path) -> dict:
    directory = Path(directory).expanduser()
    path = directory / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a zoo model directory: {MANIFEST} is missing "
            "(convert a Haiku pickle with `python -m convert.haiku_to_flax CKPT.pkl --out DIR`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def stored_shapes(directory: str | Path) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of a model directory, read from metadata only."""
    import orbax.checkpoint as ocp

    params_dir = Path(directory).expanduser().resolve() / PARAMS
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.metadata(params_dir).item_metadata.tree
    return {
        path: jax.ShapeDtypeStruct(tuple(meta.shape), meta.dtype)
        for path, meta in flatten(tree).items()
    }


def load_params(
    directory: str | Path, expected: Mapping[str, Any], *, prefixes: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Restore the stored params under ``prefixes``, strictly checked against ``expected``.

    ``expected`` holds the model's abstract params for exactly those prefixes; every
    stored path under them must match by name, shape and dtype.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).expanduser().resolve()
    stored = {
        path: shape
        for path, shape in stored_shapes(directory).items()
        if path.startswith(prefixes)
    }
    check_tree(expected, stored, source=f"checkpoint {directory}")
    with ocp.StandardCheckpointer() as checkpointer:
        restored = flatten(checkpointer.restore(directory / PARAMS))
    return {path: np.asarray(restored[path]) for path in expected}
