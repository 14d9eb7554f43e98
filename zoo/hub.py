"""``zoo.load``: find weights, build the model abstractly, restore strictly.

Weights are resolved in this order:

1. ``weights=DIR`` — a model directory (converted checkpoint or fine-tuned run);
2. the local store ``$ZOO_WEIGHTS_DIR/<name>`` (default ``~/.cache/zoo/weights/<name>``);
3. the published Haiku pickle, downloaded from the HuggingFace hub and converted once
   into the store by ``convert.haiku_to_flax`` (an allow-listed unpickler);
4. otherwise a clear error naming the command to run.

``load`` itself only ever reads orbax checkpoints and JSON: it never unpickles.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from flax import nnx

from zoo import checkpoint
from zoo.model import ModelInfo, ZooModel, build_head, build_model
from zoo.registry import EncoderSpec, get_encoder, get_head


class WeightsNotFoundError(FileNotFoundError):
    """No weights for a model could be found locally or downloaded."""


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


def _download_files(source, destination: Path) -> tuple[Path, Path | None]:
    """Fetch the published pickle (and tokenizer) into ``destination``; offline -> error."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:  # pragma: no cover - huggingface_hub is a dependency
        raise WeightsNotFoundError(f"huggingface_hub is not installed ({err})") from None
    files = [source.checkpoint] + ([source.tokenizer] if source.tokenizer else [])
    paths = [Path(hf_hub_download(source.repo_id, name, local_dir=destination)) for name in files]
    return paths[0], (paths[1] if len(paths) > 1 else None)


def _fetch_and_convert(name: str, spec: EncoderSpec, store: Path) -> Path:
    source = spec.source
    manual = (
        f"download https://huggingface.co/{source.repo_id}/resolve/main/{source.checkpoint}"
        + (f" and {source.tokenizer}" if source.tokenizer else "")
        + f", then run: python -m convert.haiku_to_flax {source.checkpoint} --model {name}"
        + (f" --tokenizer {source.tokenizer}" if source.tokenizer else "")
        + f" --out {store / name}"
    )
    try:
        pickle_path, tokenizer_path = _download_files(source, store / ".downloads" / name)
    except Exception as err:  # offline, hub down, auth: all end the same way
        raise WeightsNotFoundError(
            f"no local weights for {name!r} in {store} and the download from "
            f"{source.repo_id} failed ({type(err).__name__}: {err}). To work offline, "
            f"{manual} (or pass weights=DIR, or pretrained=False for a random model)"
        ) from None
    from convert.haiku_to_flax import convert_file

    convert_file(pickle_path, out=store / name, tokenizer=tokenizer_path, model=name)
    return store / name


def resolve_weights(name: str, weights: str | Path | None = None) -> Path:
    """The model directory holding ``name``'s weights, downloading them if needed."""
    if weights is not None:
        found = model_directory(weights)
        if found is None:
            raise WeightsNotFoundError(
                f"weights={str(weights)!r} is not a zoo model directory (no {checkpoint.MANIFEST}"
                " there or in its model/ subfolder)"
            )
        return found
    spec = get_encoder(name)
    store = weights_store()
    if (store / name / checkpoint.MANIFEST).is_file():
        return store / name
    if spec.source is None:
        raise WeightsNotFoundError(
            f"{name!r} has no published weights and none are in {store / name}; "
            "use pretrained=False for a randomly initialised model, or weights=DIR"
        )
    return _fetch_and_convert(name, spec, store)


def _load_tokenizer(directory: Path, manifest: dict):
    if not manifest.get("tokenizer"):
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(directory / manifest["tokenizer"]))


def load(
    name: str,
    head: str | None = None,
    pretrained: bool = True,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> ZooModel:
    """A ready NNX model, in eval mode.

    ``name`` is a registered encoder (see ``zoo.list_models()``) or a model directory
    (a converted checkpoint or a fine-tuned run: its stored head is used unless ``head``
    says otherwise). A head found in the weights is restored; a requested head the
    weights lack, or one asked for with a different ``num_classes``, is initialised from
    ``seed`` with a ``HeadInitializedWarning``.
    """
    looks_like_path = "/" in name or os.sep in name or Path(name).is_dir()
    directory = model_directory(name) if weights is None and looks_like_path else None
    if looks_like_path and directory is None:
        raise WeightsNotFoundError(
            f"{name!r} is not a zoo model directory or run (no {checkpoint.MANIFEST} there or in "
            "its model/ subfolder)")
    if directory is not None:
        manifest = checkpoint.read_manifest(directory)
        name = manifest["model"]
        spec = get_encoder(name)
        config = type(spec.config)(**manifest["config"])
        if head is None:
            head = manifest.get("default_head")
    else:
        spec = get_encoder(name)
        config = spec.config
        if not pretrained:
            if weights is not None:
                raise ValueError("weights=... was given with pretrained=False; drop one")
            return build_model(name, head, num_classes=num_classes, seed=seed)
        directory = resolve_weights(name, weights)
        manifest = checkpoint.read_manifest(directory)
        if manifest.get("model") not in (None, name):
            warnings.warn(f"{directory} holds {manifest.get('model')!r}, loading it as {name!r}")
    return _restore(directory, manifest, name, config, head, num_classes, seed)


def _restore(directory: Path, manifest: dict, name: str, config, head: str | None,
             num_classes: int | None, seed: int) -> ZooModel:
    stored_heads: dict = manifest.get("heads", {})
    restore_head = False
    if head is not None:
        head_spec = get_head(head)
        stored = stored_heads.get(head)
        wanted = num_classes or (stored or {}).get("num_classes") or head_spec.num_classes
        restore_head = stored is not None and (
            head_spec.kind != "classification" or stored.get("num_classes") == wanted
        )
        if not restore_head:
            why = (
                f"it holds {stored.get('num_classes')} classes, {wanted} were asked for"
                if stored else f"it holds heads {sorted(stored_heads) or 'none'}"
            )
            warnings.warn(
                f"head {head!r} initialised from seed={seed}: not restored from {directory} "
                f"({why})", HeadInitializedWarning, stacklevel=3,
            )
        num_classes = wanted

    # Build abstractly (no initialisation cost), except a head that must be initialised.
    abstract = nnx.eval_shape(lambda: build_model(name, head, num_classes=num_classes,
                                                  seed=seed, config=config))
    expected = checkpoint.module_params(abstract.encoder, "encoder/")
    prefixes = ("encoder/",)
    if restore_head:
        expected |= checkpoint.module_params(abstract.head, f"heads/{head}/")
        prefixes += (f"heads/{head}/",)
    restored = checkpoint.load_params(directory, expected, prefixes=prefixes)

    encoder = abstract.encoder
    checkpoint.assign_params(encoder, restored, "encoder/")
    head_module = None
    if head is not None:
        if restore_head:
            head_module = abstract.head
            checkpoint.assign_params(head_module, restored, f"heads/{head}/")
        else:
            head_module = build_head(head, config, num_classes=num_classes, seed=seed)
    labels = None
    if head is not None and abstract.info.head_kind == "classification":
        labels = tuple((stored_heads.get(head) or {}).get("labels") or abstract.info.labels)
    info = ModelInfo(name, config, head, abstract.info.head_kind,
                     abstract.info.num_classes, labels)
    model = ZooModel(encoder, head_module, info, tokenizer=_load_tokenizer(directory, manifest))
    model.eval()
    return model
