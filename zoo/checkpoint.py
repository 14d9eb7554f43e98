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

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from zoo.errors import ConfigError, ZooError
from zoo.fsutil import json_or_none, read_json

FORMAT = "zoo-model/1"
MANIFEST = "zoo.json"
PARAMS = "params"
TOKENIZER = "tokenizer.json"


class CheckpointMismatchError(ZooError, ValueError):
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


def fill_state(state: nnx.State, flat: Mapping[str, Any], prefix: str = "", *,
               copy: bool = True) -> nnx.State:
    """Write {'path': array} into ``state`` in place (strictly check ``flat`` first).

    ``copy=False`` lets a NumPy array's memory back the parameter with no copy (on the
    CPU): only for arrays nothing else holds, such as those a restore has just read.
    """
    put = jax.numpy.asarray if copy else jax.device_put
    for path, var in nnx.to_flat_state(state):
        var.set_value(put(flat[prefix + "/".join(map(str, path))]))
    return state


def module_params(module: nnx.Module, prefix: str = "") -> dict[str, Any]:
    """The module's ``nnx.Param`` values as {'path': array} (abstract or concrete)."""
    return state_values(nnx.state(module, nnx.Param), prefix)


def assign_params(module: nnx.Module, flat: Mapping[str, Any], prefix: str = "", *,
                  copy: bool = True) -> None:
    """Write {'path': array} into the module's params in place (paths must already match;
    ``copy``: as in ``fill_state``)."""
    nnx.update(module, fill_state(nnx.state(module, nnx.Param), flat, prefix, copy=copy))


def check_tree(
    expected: Mapping[str, Any], found: Mapping[str, Any], *, source: str,
    unmapped: Sequence[str] = (), unmapped_title: str = "source names with no zoo name",
) -> None:
    """Compare flat {path: array-like} trees by name, shape and dtype; raise one report.

    ``unmapped``: names a converter could not map to a zoo path, reported in the same error.
    """
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
    if missing or unexpected or mismatched or unmapped:
        lines = [f"{source} does not fit the model:"]
        for title, items in (
            ("missing", missing), ("unexpected", unexpected), ("wrong shape or dtype", mismatched),
            (unmapped_title, sorted(unmapped)),
        ):
            if items:
                lines.append(f"  {len(items)} {title}:")
                lines.extend(f"    {item}" for item in grouped(items))
        raise CheckpointMismatchError("\n".join(lines))


_INDEX = re.compile(r"(?<=[/.])\d+(?=[/.:]|$)")  # a layer number in a/3/b or a.3.b


def grouped(items: Sequence[str], least: int = 3) -> list[str]:
    """Report lines that differ only in one layer number, as one line: ``blocks/{2..1023}/x``
    (a 2-layer checkpoint under a 1024-layer config is 16 lines, not 16,000)."""
    order = {item: i for i, item in enumerate(items)}
    by_pattern: dict[str, list[tuple[tuple[int, ...], str]]] = {}
    for item in items:
        numbers = tuple(int(n) for n in _INDEX.findall(item))
        by_pattern.setdefault(_INDEX.sub("\0", item), []).append((numbers, item))
    lines: list[tuple[int, str]] = []  # (where the first item was, line)
    for pattern, members in by_pattern.items():
        width = len(members[0][0])
        at = next((i for i in range(width) if len({n[i] for n, _ in members}) > 1), 0)
        subgroups: dict[tuple[int, ...], list[tuple[int, str]]] = {}
        for numbers, item in members:
            key = numbers[:at] + numbers[at + 1:]
            subgroups.setdefault(key, []).append((numbers[at] if width else 0, item))
        for others, group in subgroups.items():
            if not width or len(group) < least:
                lines += [(order[item], item) for _, item in group]
                continue
            values = sorted(value for value, _ in group)
            span = (f"{{{values[0]}..{values[-1]}}}"
                    if values == list(range(values[0], values[-1] + 1))
                    else "{" + ",".join(map(str, values)) + "}")
            fill = iter([*others[:at], span, *others[at:]])
            lines.append((min(order[item] for _, item in group),
                          re.sub("\0", lambda _: str(next(fill)), pattern)
                          + f" ({len(group)} of them)"))
    return [line for _, line in sorted(lines)]


# ---------------------------------------------------------------------------- directory I/O


class IntegrityError(ZooError, ValueError):
    """A stored file does not match the checksum recorded when it was written."""


def file_checksums(root: Path, hashed: Callable[[Path], bool] | None = None
                   ) -> dict[str, str | None]:
    """sha256 of every file under ``root``, keyed by '/'-joined relative path; a file
    ``hashed`` rejects is listed with ``None`` (its content is checked elsewhere)."""
    sums: dict[str, str | None] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if hashed is not None and not hashed(path):
            sums[path.relative_to(root).as_posix()] = None
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        sums[path.relative_to(root).as_posix()] = digest.hexdigest()
    return sums


def verify_checksums(root: Path, recorded: Mapping[str, str], *, what: str,
                     ignore: Collection[str] = (), remedy: str | None = None,
                     hashed: Callable[[Path], bool] | None = None) -> None:
    """Fail with one line naming the first file that is missing, extra or altered.

    The one comparison of recorded and found checksums, for model directories and for the
    trainer's checkpoint steps alike. ``what`` names ``root`` in the message ("the model
    directory ..."); ``ignore``: files under ``root`` the record does not cover (the record
    itself); ``remedy``: the advice that ends the message of an extra or altered file;
    ``hashed``: the files whose content is checked (default all; every file's presence is).
    """
    remedy = remedy or f"restore it or re-create {what}"
    found = file_checksums(root, hashed)
    for name in ignore:
        found.pop(name, None)
    for name in sorted(set(recorded) | set(found)):
        if name not in found:
            raise IntegrityError(f"{root / name}: missing ({what} is incomplete)")
        if name not in recorded:
            raise IntegrityError(f"{root / name}: not part of {what} (unexpected file), {what} "
                                 f"is corrupted; {remedy}")
        if found[name] is not None and found[name] != recorded[name]:
            raise IntegrityError(
                f"{root / name}: checksum mismatch, the file is corrupted (sha256 "
                f"{found[name][:12]}..., recorded {recorded[name][:12]}...); {remedy}")


def _replaceable_model_dir(path: Path) -> bool:
    """A model directory holding nothing but its own files (so replacing it loses nothing)."""
    from zoo.fsutil import entries_are

    return is_model_dir(path) and entries_are(path, {MANIFEST, PARAMS, TOKENIZER}.__contains__)


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a zoo model directory (its manifest names our format)."""
    manifest = json_or_none(path / MANIFEST)
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def _this_process_only():
    """orbax's options for this process alone (a model directory is written by one process
    and read by each on its own, also when several processes train together)."""
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


def _local_checkpointer():
    """An orbax checkpointer for this process alone."""
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())


def _save_params(directory: Path, tree: Mapping) -> None:
    """Write a params tree for this process alone, uncompressed: zstd saves a model's
    random-looking float weights only about 8 % of their size, and decoding it doubled the
    restore (0.8 s against 0.45 s for RoBERTa-base on 2 cores). Either kind restores."""
    import orbax.checkpoint as ocp

    options = _this_process_only()
    handler = ocp.PyTreeCheckpointHandler(use_compression=False, multiprocessing_options=options)
    with ocp.Checkpointer(handler, multiprocessing_options=options) as checkpointer:
        checkpointer.save(directory, args=ocp.args.PyTreeSave(tree))


def save_model_dir(
    directory: str | Path,
    params: Mapping[str, Any],
    manifest: Mapping[str, Any],
    tokenizer: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write a model directory atomically: into a new temporary sibling, then rename.

    ``params`` is flat: {'encoder/...': array, 'heads/<name>/...': array}; ``tokenizer``
    is a ``tokenizers.Tokenizer`` or the path of a ``tokenizer.json``. An existing
    ``directory`` is replaced only when it is empty, or when it is itself a zoo model
    directory and ``overwrite`` is set; anything else is refused, so no user file is lost.
    """

    from zoo.fsutil import atomic_directory

    directory = Path(directory).expanduser().absolute()
    with atomic_directory(directory, overwrite=overwrite, owned=_replaceable_model_dir,
                          what="a zoo model directory") as tmp:
        tree = unflatten({k: np.asarray(v) for k, v in params.items()})
        _save_params(tmp / PARAMS, tree)
        manifest = {"format": FORMAT, **manifest}
        manifest["num_params"] = int(sum(np.size(v) for v in params.values()))
        manifest["tokenizer"] = TOKENIZER if tokenizer is not None else None
        if tokenizer is not None:
            if hasattr(tokenizer, "to_str"):
                (tmp / TOKENIZER).write_text(tokenizer.to_str())
            else:
                shutil.copyfile(tokenizer, tmp / TOKENIZER)
        manifest["checksums"] = {f"{PARAMS}/{k}": v
                                 for k, v in file_checksums(tmp / PARAMS).items()}
        if tokenizer is not None:
            manifest["checksums"][TOKENIZER] = file_checksums(tmp)[TOKENIZER]
        # Sizes are compared before anything is read: a truncated file is refused at once,
        # before orbax reads it (its content is hashed on a thread while the model builds).
        manifest["sizes"] = {name: (tmp / name).stat().st_size for name in manifest["checksums"]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


def save_converted(directory: str | Path, converted, overwrite: bool = False) -> Path:
    """Write a family's ``registry.Converted`` result as a model directory."""
    return save_model_dir(directory, converted.params, converted.manifest(),
                          tokenizer=converted.tokenizer, overwrite=overwrite)


def verify_model_dir_in_background(directory: str | Path,
                                   manifest: Mapping[str, Any]) -> Callable[[], None]:
    """Check the model directory's small files (metadata, tokenizer) now, and start on a
    thread the check of its large ones; return the function that waits for that thread
    (and raises what it found).

    Hashing releases the GIL, so the large files' check overlaps the model's build and
    read instead of adding its 0.3-0.6 s to a base-size load. The small files come first
    because orbax reads an altered metadata file into a confusing error (and leaves
    callbacks that fail after its event loop closed)."""
    import concurrent.futures

    def small(path: Path) -> bool:  # a missing file counts as small: reported now
        return not path.is_file() or path.stat().st_size < _BACKGROUND_BYTES

    verify_model_dir(directory, manifest, hashed=small)
    verify_sizes(directory, manifest)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zoo-verify")
    try:
        return pool.submit(verify_model_dir, directory, manifest,
                           hashed=lambda path: not small(path)).result
    finally:
        pool.shutdown(wait=False)


_BACKGROUND_BYTES = 1 << 20  # files this large are hashed on a thread


def verify_model_dir(directory: str | Path, manifest: Mapping[str, Any], *,
                     hashed: Callable[[Path], bool] | None = None) -> None:
    """Check every recorded checksum (directories written before checksums pass unchecked);
    ``hashed``: only these files' content (as in ``verify_checksums``)."""
    recorded = manifest.get("checksums")
    if recorded is None:
        return
    directory = Path(directory)
    params = {k[len(PARAMS) + 1:]: v for k, v in recorded.items() if k.startswith(PARAMS + "/")}
    verify_checksums(directory / PARAMS, params, what=f"the model directory {directory}",
                     hashed=hashed)
    if TOKENIZER in recorded and (hashed is None or hashed(directory / TOKENIZER)):
        _verify_one(directory / TOKENIZER, recorded[TOKENIZER])


def verify_sizes(directory: str | Path, manifest: Mapping[str, Any]) -> None:
    """Every file's size as recorded (directories written before sizes pass unchecked):
    a truncated or grown file fails here, with one line, before any of it is read."""
    directory = Path(directory)
    for name, size in sorted((manifest.get("sizes") or {}).items()):
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{path}: missing (the model directory is incomplete)")
        found = path.stat().st_size
        if found != size:
            raise IntegrityError(
                f"{path}: {found} bytes, recorded {size}: the file is truncated or corrupted; "
                f"restore it or re-create the model directory {directory}")


def _verify_one(path: Path, expected: str) -> None:
    if not path.is_file():
        raise IntegrityError(f"{path}: missing (the model directory is incomplete)")
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise IntegrityError(f"{path}: checksum mismatch, the file is corrupted")


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a model directory, validated (types, names, heads, labels, paths)."""
    directory = Path(directory).expanduser()
    path = directory / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a zoo model directory: {MANIFEST} is missing "
            "(convert a checkpoint with a command from convert/, or export a run)"
        )
    manifest = read_json(path)
    validate_manifest(manifest, path)
    return manifest


def validate_manifest(manifest: Any, path: Path | str) -> None:
    """Raise ``ConfigError`` naming ``path`` and the field for anything malformed."""
    def bad(message: str):
        raise ConfigError(f"{path}: {message}")

    if not isinstance(manifest, dict):
        bad(f"expected a JSON object, found {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        bad(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(manifest.get("model"), str) or not manifest["model"]:
        bad("'model' must be a registered model name (a non-empty string)")
    if not isinstance(manifest.get("config"), dict):
        bad("'config' must be a JSON object")
    heads = manifest.get("heads", {})
    if not isinstance(heads, dict):
        bad("'heads' must be a JSON object {name: {kind, ...}}")
    from zoo.tasks import get_task, task_names

    kinds = task_names()
    for name, meta in heads.items():
        if not isinstance(meta, dict) or meta.get("kind") not in kinds:
            bad(f"heads.{name}: expected {{\"kind\": {' | '.join(map(repr, kinds))}, ...}}")
        if get_task(meta["kind"]).has_classes:
            n = meta.get("num_classes")
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                bad(f"heads.{name}.num_classes must be an integer >= 2, got {n!r}")
            labels = meta.get("labels")
            if labels is not None and (not isinstance(labels, list) or len(labels) != n
                                       or not all(isinstance(x, str) for x in labels)):
                bad(f"heads.{name}.labels must be {n} strings (one per class), got {labels!r}")
    max_len = manifest.get("max_len")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)
                                or max_len < 2):
        bad(f"'max_len' must be an integer >= 2, got {max_len!r}")
    default = manifest.get("default_head")
    if default is not None and default not in heads:
        bad(f"default_head {default!r} is not one of the stored heads {sorted(heads)}")
    tokenizer = manifest.get("tokenizer")
    if tokenizer is not None:
        if not isinstance(tokenizer, str) or not tokenizer or "/" in tokenizer \
                or "\\" in tokenizer or tokenizer in (".", ".."):
            bad(f"'tokenizer' must be a file name inside the model directory, got {tokenizer!r}")
    checksums = manifest.get("checksums")
    if checksums is not None and not (
            isinstance(checksums, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in checksums.items())):
        bad("'checksums' must map file names to sha256 strings")
    sizes = manifest.get("sizes")
    if sizes is not None and not (
            isinstance(sizes, dict) and set(sizes) <= set(checksums or {})
            and all(type(v) is int and v >= 0 for v in sizes.values())):
        bad("'sizes' must map the checksummed file names to byte counts")


def stored_shapes(directory: str | Path) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of a model directory, read from metadata only."""
    params_dir = Path(directory).expanduser().resolve() / PARAMS
    with _local_checkpointer() as checkpointer:
        try:
            item = checkpointer.metadata(params_dir).item_metadata
        except (ValueError, TypeError, KeyError, OSError) as err:  # unverified and unreadable
            raise IntegrityError(f"{params_dir}: unreadable orbax checkpoint "
                                 f"({type(err).__name__}: {str(err)[:200]})") from None
        if item is None:  # orbax's answer for an unparseable _METADATA
            raise IntegrityError(f"{params_dir}: unreadable orbax checkpoint (its _METADATA "
                                 "cannot be read)")
        tree = item.tree
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
    directory = Path(directory).expanduser().resolve()
    stored = {
        path: shape
        for path, shape in stored_shapes(directory).items()
        if path.startswith(prefixes)
    }
    check_tree(expected, stored, source=f"checkpoint {directory}")
    with _local_checkpointer() as checkpointer:
        try:
            restored = flatten(checkpointer.restore(directory / PARAMS))
        except (ValueError, TypeError, KeyError, OSError) as err:
            raise IntegrityError(f"{directory / PARAMS}: unreadable orbax checkpoint "
                                 f"({type(err).__name__}: {str(err)[:200]})") from None
    return {path: np.asarray(restored[path]) for path in expected}
