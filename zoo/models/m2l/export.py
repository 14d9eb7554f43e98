"""The M2L family's interchange folder (``zoo export --format hf`` of an M2L model).

transformers has no M2L architecture, so the family writes its own: ``model.safetensors``
(the zoo's parameter paths, float32), ``config.json`` (the zoo's manifest: model, config,
heads) and the tokenizer files. ``zoo.load(folder)`` reads it back (``open_export``), with
the safetensors header and every tensor's shape checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from zoo.errors import ConfigError
from zoo.fsutil import json_or_none, read_json
from zoo.registry import Converted

FORMAT = "zoo-m2l-safetensors/1"
CONFIG, WEIGHTS = "config.json", "model.safetensors"


def write_folder(model, folder: Path) -> dict:
    """Write ``model`` (an M2L ``ZooModel``) into the empty ``folder``."""
    from safetensors.numpy import save_file

    from zoo.checkpoint import module_params
    from zoo.text import tokenizer_files

    info = model.info
    params = module_params(model.encoder, "encoder/")
    heads = {}
    if model.head is not None:
        params |= module_params(model.head, f"heads/{info.head}/")
        heads[info.head] = {"kind": info.head_kind}
        if info.num_classes is not None and info.labels:
            heads[info.head] |= {"num_classes": info.num_classes, "labels": list(info.labels)}
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in params.items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": FORMAT})
    manifest = {"format": FORMAT, "model": info.encoder, "config": info.config.to_dict(),
                "heads": heads, "default_head": info.head, "max_len": info.max_len}
    files = {CONFIG: json.dumps(manifest, indent=2) + "\n"}
    if model.tokenizer is not None:
        files |= tokenizer_files(model.tokenizer, info.input_len)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return {"format": FORMAT, "files": sorted([WEIGHTS, *files]),
            "parameters": int(sum(a.size for a in tensors.values()))}


def is_export(path: Path) -> bool:
    manifest = json_or_none(path / CONFIG) if path.is_dir() else None
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def open_export(path: Path, name: str | None, config_from_dict: Callable[[Any], Any]
                ) -> Converted:
    """A folder ``write_folder`` wrote, as ``Converted`` (shapes checked against the model;
    ``config_from_dict``: the family's config parser)."""
    from zoo.checkpoint import check_tree
    from zoo.errors import UnknownNameError
    from zoo.hf.files import read_safetensors, sha256
    from zoo.model import expected_params
    from zoo.registry import get_encoder
    from zoo.text import read_tokenizer_file

    manifest = read_json(path / CONFIG)
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path / CONFIG}: expected a JSON object")
    model = name or manifest.get("model")
    if not isinstance(model, str):
        raise ConfigError(f"{path / CONFIG}: 'model' must name the encoder")
    try:
        get_encoder(model)
        config = config_from_dict(manifest.get("config"))
    except (UnknownNameError, ValueError) as err:
        raise ConfigError(f"{path / CONFIG}: {err}") from None
    heads = manifest.get("heads") or {}
    if not isinstance(heads, dict):
        raise ConfigError(f"{path / CONFIG}: 'heads' must be an object")
    if not (path / WEIGHTS).is_file():
        raise ConfigError(f"{path}: no {WEIGHTS} beside {CONFIG}")
    params = read_safetensors(path / WEIGHTS)
    expected = expected_params(model, {h: meta.get("num_classes") for h, meta in heads.items()},
                               config=config)
    check_tree(expected, params, source=str(path / WEIGHTS))
    tokenizer = read_tokenizer_file(path / "tokenizer.json") \
        if (path / "tokenizer.json").is_file() else None
    return Converted(model=model, config=config, params=params, heads=heads,
                     default_head=manifest.get("default_head"), tokenizer=tokenizer,
                     source={"kind": "zoo-export", "path": str(path), "file": WEIGHTS,
                             "sha256": sha256(path / WEIGHTS)})
