"""``zoo export``: a model (a run, a model directory, a preset, an HF folder) written for
the tools outside the zoo.

- ``hf``: the family's interchange format, written by the family (``Family.export``): for
  the HF families a folder transformers loads (``zoo.hf.export``); for the M2L family its
  own weights + config folder, which ``zoo.load`` reads back.
- ``onnx``: ``model.onnx`` (``zoo.onnx_export``: int64 ``input_ids``, ``attention_mask``
  [, ``token_type_ids``] of dynamic batch and length; ``logits``, ``sentence_embedding`` or
  ``last_hidden_state``) beside the tokenizer files.

Either way the folder is written atomically (a crash leaves the previous export or none),
an output that holds anything but an earlier zoo export is refused before any work, and
``zoo-export.json`` records what the folder is: its source, head, labels and files.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from zoo.errors import InvalidArgumentError
from zoo.fsutil import atomic_directory, check_output

FORMATS = ("hf", "onnx")
MARKER = "zoo-export.json"
ONNX_FILE = "model.onnx"
NO_HEAD = "none"  # ``head=`` value: export the encoder alone
_WHAT = "a zoo export"


def is_export_dir(path: Path) -> bool:
    """A folder this module wrote: its marker lists every entry it holds."""
    marker = Path(path) / MARKER
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    top = {str(f).split("/")[0] for f in files} | {MARKER}
    return all(entry.name in top for entry in Path(path).iterdir())


def export(source: Any, out: str | Path, *, format: str = "hf", head: str | None = None,
           overwrite: bool = False) -> dict:
    """Export ``source`` (a loaded ``ZooModel``, or anything ``zoo.load`` opens) to the
    folder ``out``; returns the summary also written to ``out/zoo-export.json``.

    ``head``: which of the source's heads (default: the one it loads with); ``"none"``
    exports the encoder alone (``last_hidden_state``)."""
    from zoo.hub import HeadInitializedWarning, load
    from zoo.model import ZooModel

    if format not in FORMATS:
        raise InvalidArgumentError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    check_output(out, overwrite=overwrite, owned=is_export_dir, what=_WHAT)
    if isinstance(source, ZooModel):
        model, where = source, source.info.encoder
        if head is not None and head != (NO_HEAD if model.head is None else model.info.head):
            raise InvalidArgumentError(f"head={head!r}: pass a model with that head (loaded "
                                       f"with zoo.load(..., head={head!r})) or {NO_HEAD!r}")
    else:
        where = str(source)
        with warnings.catch_warnings():  # a head the source lacks would start random
            warnings.simplefilter("error", HeadInitializedWarning)
            try:
                model = load(where, head=None if head in (None, NO_HEAD) else head)
            except HeadInitializedWarning:
                raise InvalidArgumentError(
                    f"--head {head}: {where} holds no trained {head!r} head (it would be "
                    f"exported untrained); export a head it has, or {NO_HEAD!r} for the "
                    "encoder alone") from None
    if head == NO_HEAD:
        model = encoder_only(model)
    model.eval()
    with atomic_directory(out, overwrite=overwrite, owned=is_export_dir, what=_WHAT) as tmp:
        if format == "hf":
            summary = _export_family(model, tmp)
        else:
            summary = _export_onnx(model, tmp)
        info = model.info
        summary = {"source": where, "model": info.encoder, "head": info.head,
                   "head_kind": info.head_kind, "labels": list(info.labels or []) or None,
                   "max_len": info.input_len, **summary}
        summary["files"] = sorted(set(summary.get("files", ())) | {
            str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()})
        (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def encoder_only(model):
    """The model without its head: its outputs are the encoder's hidden states."""
    from zoo.model import ModelInfo, ZooModel

    info = model.info
    return ZooModel(model.encoder, None, ModelInfo(info.encoder, info.config,
                                                   max_len=info.max_len), model.tokenizer)


def _export_family(model, folder: Path) -> dict:
    from zoo.registry import get_encoder

    family = get_encoder(model.info.encoder).family
    if family.export is None:
        raise InvalidArgumentError(f"{model.info.encoder}: the {family.name} family has no "
                                   "--format hf export; use --format onnx")
    return family.export(model, folder)


def _export_onnx(model, folder: Path) -> dict:
    from zoo.onnx_export import export_onnx
    from zoo.text import tokenizer_files

    summary = export_onnx(model, folder / ONNX_FILE)
    if model.tokenizer is not None:
        for name, text in tokenizer_files(model.tokenizer, model.info.input_len).items():
            (folder / name).write_text(text, encoding="utf-8")
    return {"format": "onnx", **summary}
