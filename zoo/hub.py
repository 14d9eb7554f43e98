"""``zoo.load``: find weights, build the model abstractly, restore strictly.

Weights are resolved in this order:

1. ``weights=DIR`` — a zoo model directory (converted checkpoint or fine-tuned run), or a
   checkpoint in a family's own format that the family recognises (``Family.open_folder``),
   converted in memory;
2. the local store ``$ZOO_WEIGHTS_DIR/<name>`` (default ``~/.cache/zoo/weights/<name>``);
3. the published weights, fetched and converted once into the store by the model's
   family (``EncoderSpec.family.fetch``);
4. otherwise a clear error naming the commands to run.

This module knows no weight format and no family: it reads zoo model directories (orbax
and JSON) and the ``Converted`` results families hand it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from flax import nnx

from zoo import checkpoint
from zoo.errors import ConfigError, InvalidArgumentError
from zoo.model import ZooModel, abstract_encoder, build_head, build_model, model_info
from zoo.nn import PRECISIONS, set_precision
from zoo.tasks import get_task
from zoo.registry import Converted, WeightsNotFoundError, families, get_encoder, get_head
from zoo.text import check_fits

__all__ = ["HeadInitializedWarning", "WeightsNotFoundError", "cache_root", "load",
           "model_directory", "resolve_weights", "weights_store"]


class HeadInitializedWarning(UserWarning):
    """The requested head was not in the checkpoint and was initialised from the seed."""


def cache_root() -> Path:
    """Where zoo caches tokenizers and tokenised data: ``$ZOO_CACHE_DIR`` or ``~/.cache/zoo``."""
    env = os.environ.get("ZOO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo"


def weights_store() -> Path:
    """The local weights store: ``$ZOO_WEIGHTS_DIR`` or ``~/.cache/zoo/weights``."""
    env = os.environ.get("ZOO_WEIGHTS_DIR")
    return Path(env).expanduser() if env else cache_root() / "weights"


def model_directory(path: str | Path) -> Path | None:
    """The model directory at ``path`` (a converted dir, or a run dir holding ``model/``)."""
    path = Path(path).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / checkpoint.MANIFEST).is_file():
            return candidate
    return None


def open_foreign(path: str | Path, name: str | None = None) -> Converted | None:
    """``path`` converted in memory by the first family that recognises its format."""
    path = Path(path).expanduser()
    for family in families():
        if family.open_folder is not None:
            converted = family.open_folder(path, name)
            if converted is not None:
                return converted
    return None


def _not_weights(path) -> Exception:
    from zoo.fsutil import FolderLock, InUseError

    pid = FolderLock.holder(Path(path)) if Path(path).is_dir() else None
    if pid is not None:  # a run folder whose first training is under way: no model yet
        return InUseError(f"{path} is being trained by process {pid} and holds no model yet; "
                          "its model/ appears when training ends")
    return WeightsNotFoundError(
        f"{str(path)!r} is neither a zoo model directory or run (no {checkpoint.MANIFEST} there "
        "or in its model/ subfolder) nor a checkpoint a model family recognises ("
        + "; ".join(dict.fromkeys(f.formats for f in families() if f.formats)) + ")")


def resolve_weights(name: str, weights: str | Path | None = None) -> Path | Converted:
    """Where ``name``'s weights are: a model directory, or a ``Converted`` foreign checkpoint.

    Published weights are fetched and converted into the store on first use.
    """
    if weights is not None:
        found = model_directory(weights)
        if found is not None:
            return found
        converted = open_foreign(weights, name)
        if converted is None:
            raise _not_weights(weights)
        return converted
    spec = get_encoder(name)
    store = weights_store()
    if (store / name / checkpoint.MANIFEST).is_file():
        return store / name
    if spec.source is None or spec.family.fetch is None:
        raise WeightsNotFoundError(
            f"{name!r} has no published weights and none are in {store / name}; "
            "use pretrained=False for a randomly initialised model, or weights=DIR"
        )
    converted = spec.family.fetch(spec, store / ".downloads" / name)
    # The store is a cache beside: this load restores straight from the converted arrays.
    checkpoint.save_converted(store / name, converted, overwrite=True)
    return converted


def load(
    name: str,
    head: str | None = None,
    pretrained: bool = True,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    precision: str = "float32",
) -> ZooModel:
    """A ready NNX model, in eval mode.

    ``name`` is a registered encoder (see ``zoo.list_models()``), a model directory (a
    converted checkpoint or a fine-tuned run: its stored head is used unless ``head`` says
    otherwise) or a checkpoint folder a family recognises (e.g. a HuggingFace BERT folder);
    ``weights`` names such a folder for a registered name (``"roberta-custom"``), whose
    stored head is used likewise. A head found in the weights is restored; a requested head
    the weights lack, or one asked for with a different ``num_classes``, is initialised from
    ``seed`` with a ``HeadInitializedWarning``. ``precision="bf16"`` computes in bfloat16
    with float32 parameters and float32 accumulation (``zoo.nn.set_precision``): the fast
    choice for ``predict`` and ``encode`` on GPUs and on CPUs with bf16 matrix units (AMX).
    """
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                                   f"{precision!r}")
    model = _load(name, head, pretrained, weights, num_classes, seed)
    if precision != "float32":
        set_precision(model, precision)
    return model


def _load(name, head, pretrained, weights, num_classes, seed) -> ZooModel:
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a model name or a path, not {type(name).__name__}")
    name = os.fspath(name)
    looks_like_path = "/" in name or os.sep in name or Path(name).exists()
    if looks_like_path and weights is None:
        if not pretrained:
            raise InvalidArgumentError(
                "pretrained=False makes no sense for a path; pass a model name")
        found: Path | Converted | None = model_directory(name) or open_foreign(name)
        if found is None:
            raise _not_weights(name)
        explicit_head = head
    else:
        get_encoder(name)  # an unknown name fails here, before anything is read
        if not pretrained:
            if weights is not None:
                raise InvalidArgumentError(
                    "weights=... was given with pretrained=False; drop one")
            return build_model(name, head, num_classes=num_classes, seed=seed)
        found = resolve_weights(name, weights)
        explicit_head = head
    verified: Callable[[], None] = lambda: None
    if isinstance(found, Converted):
        model_name, config, manifest = found.model, found.config, found.manifest()
        tokenizer = found.tokenizer
        if not looks_like_path and weights is not None and model_name != name:
            model_name = _same_family_name(name, model_name)
    else:
        manifest = checkpoint.read_manifest(found)
        verified = checkpoint.verify_model_dir_in_background(found, manifest)
        model_name = manifest["model"]
        if not looks_like_path and model_name != name:
            # Loading as another preset: that preset's architecture, checked strictly.
            warnings.warn(f"{found} holds {model_name!r}, loading it as {name!r}")
            model_name, config = name, get_encoder(name).config
        else:
            try:
                config = get_encoder(model_name).family.config_from_dict(manifest["config"])
            except (ValueError, TypeError) as err:  # families raise plain ValueErrors
                raise ConfigError(f"{found / checkpoint.MANIFEST}: {err}") from None
        tokenizer = _load_tokenizer(found, manifest)
    if explicit_head is None and (looks_like_path or weights is not None):
        head = manifest.get("default_head")  # the weights' own head (e.g. an HF classifier)
    return _restore(found, manifest, model_name, config, head, num_classes, seed, tokenizer,
                    verified)


def _same_family_name(requested: str, found: str) -> str:
    """The registered name a foreign checkpoint is loaded under (the one asked for)."""
    if get_encoder(requested).family is not get_encoder(found).family:
        raise InvalidArgumentError(f"the weights hold a {get_encoder(found).family.name} model, "
                         f"but {requested!r} is a {get_encoder(requested).family.name} model")
    return requested


def _load_tokenizer(directory: Path, manifest: dict):
    name = manifest.get("tokenizer")
    if not name:
        return None
    from zoo.text import read_tokenizer_file

    path = (directory / name).resolve()
    if directory.resolve() not in path.parents:
        raise ConfigError(f"{directory / checkpoint.MANIFEST}: tokenizer path {name!r} leaves "
                         "the model directory")
    return read_tokenizer_file(path)


def _restore(found: Path | Converted, manifest: dict, name: str, config, head: str | None,
             num_classes: int | None, seed: int, tokenizer,
             verified: Callable[[], None]) -> ZooModel:
    """``verified`` waits for the model directory's checksums (checked on a thread while
    the model is built and read) and raises if a file is altered; nothing read is used, and
    no read error reported, before it has passed."""
    stored_heads: dict = manifest.get("heads", {})
    restore_head = False
    if head is not None:
        head_spec = get_head(head)
        stored = stored_heads.get(head)
        wanted = num_classes or (stored or {}).get("num_classes") or head_spec.num_classes
        restore_head = stored is not None and (
            not get_task(head_spec.kind).has_classes or stored.get("num_classes") == wanted
        )
        if not restore_head and _has_params(head, config, wanted):  # else nothing to restore
            why = (
                f"it holds {stored.get('num_classes')} classes, {wanted} were asked for"
                if stored else f"it holds heads {sorted(stored_heads) or 'none'}"
            )
            warnings.warn(
                f"head {head!r} initialised from seed={seed}: not restored from "
                f"{_where(found)} ({why})", HeadInitializedWarning, stacklevel=3,
            )
        num_classes = wanted

    # Build abstractly (no initialisation cost), except a head that must be initialised.
    labels = (stored_heads.get(head) or {}).get("labels") if restore_head else None
    info = model_info(name, config, head, num_classes, labels)
    if isinstance(manifest.get("max_len"), int):
        info = dataclasses.replace(info, max_len=manifest["max_len"])
    encoder = abstract_encoder(name, config)
    expected = checkpoint.module_params(encoder, "encoder/")
    prefixes: tuple[str, ...] = ("encoder/",)
    head_module = None
    if restore_head:
        head_module = nnx.eval_shape(lambda: build_head(head, config, num_classes=num_classes,
                                                        seed=seed))
        expected |= checkpoint.module_params(head_module, f"heads/{head}/")
        prefixes += (f"heads/{head}/",)
    elif head is not None:
        head_module = build_head(head, config, num_classes=info.num_classes, seed=seed)
    if isinstance(found, Converted):
        offered = {k: v for k, v in found.params.items() if k.startswith(prefixes)}
        checkpoint.check_tree(expected, offered, source=_where(found))
        restored = {k: np.asarray(v) for k, v in offered.items()}
    else:
        try:  # while the checksums are still being checked on their thread
            restored = checkpoint.load_params(found, expected, prefixes=prefixes)
        except Exception:
            verified()  # an altered file is the better explanation of a failed read
            raise
        verified()
    # A restore's arrays are this load's alone: they back the parameters uncopied.
    copy = isinstance(found, Converted)
    checkpoint.assign_params(encoder, restored, "encoder/", copy=copy)
    if restore_head:
        checkpoint.assign_params(head_module, restored, f"heads/{head}/", copy=copy)
    if tokenizer is not None:
        check_fits(tokenizer, config.vocab_size, _where(found))
    model = ZooModel(encoder, head_module, info, tokenizer=tokenizer)
    model.eval()
    return model


def _has_params(head: str, config, num_classes: int | None) -> bool:
    """Whether the head holds parameters (a pooling head, e.g. ``embedder``, has none)."""
    abstract = nnx.eval_shape(lambda: build_head(head, config, num_classes=num_classes, seed=0))
    return bool(checkpoint.module_params(abstract))


def _where(found) -> str:
    if isinstance(found, Converted):
        return str(found.source.get("path") or found.source.get("file") or found.model)
    return f"checkpoint {found}"
