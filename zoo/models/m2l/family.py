"""The M2L family as the core sees it: config from a manifest, fetching published weights
(a pickled Haiku training state on the HuggingFace hub), opening a local pickle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from zoo.models.m2l.modeling import M2LConfig
from zoo.registry import Converted, Family, WeightsNotFoundError, register_family


@dataclasses.dataclass(frozen=True)
class HubSource:
    """Where the published (pickled Haiku) weights of an M2L encoder live."""

    repo_id: str
    checkpoint: str
    tokenizer: str | None = None


def config_from_dict(values: Mapping) -> M2LConfig:
    if not isinstance(values, Mapping):
        raise ValueError(f"config must be a JSON object, not {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(M2LConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"config: unknown M2L field(s) {', '.join(unknown)}")
    for key in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_len"):
        value = values.get(key)
        if key in values and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"config: {key} must be a positive integer, got {value!r}")
    dropout = values.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0.0 <= dropout < 1.0:
        raise ValueError(f"config: dropout must be in [0, 1), got {dropout!r}")
    try:
        return M2LConfig(**values)
    except TypeError as err:
        raise ValueError(f"config: {err}") from None


def fetch(spec, download_dir: Path) -> Converted:
    """Download the published pickle (and tokenizer), convert it safely; offline -> error."""
    from zoo.models.m2l.convert import convert_pickle

    source = spec.source
    manual = (
        f"download https://huggingface.co/{source.repo_id}/resolve/main/{source.checkpoint}"
        + (f" and {source.tokenizer}" if source.tokenizer else "")
        + f", then run: python -m convert.haiku_to_flax {source.checkpoint} --model {spec.name}"
        + (f" --tokenizer {source.tokenizer}" if source.tokenizer else "")
    )
    try:
        from huggingface_hub import hf_hub_download

        files = [source.checkpoint] + ([source.tokenizer] if source.tokenizer else [])
        paths = [Path(hf_hub_download(source.repo_id, f, local_dir=download_dir)) for f in files]
    except Exception as err:  # offline, hub down, auth: all end the same way
        raise WeightsNotFoundError(
            f"no local weights for {spec.name!r} and the download from {source.repo_id} failed "
            f"({type(err).__name__}: {str(err)[:200]}). To work offline, {manual} (or pass "
            "weights=DIR, or pretrained=False for a random model)"
        ) from None
    return convert_pickle(paths[0], tokenizer=paths[1] if len(paths) > 1 else None,
                          model=spec.name)


def open_folder(path: Path, name: str | None) -> Converted | None:
    """A Haiku ``.pkl`` file (read through the allow-listed unpickler), or the family's own
    export folder (``zoo.models.m2l.export``), else None."""
    from zoo.models.m2l import export

    if export.is_export(path):
        return export.open_export(path, name, config_from_dict)
    if not (path.is_file() and path.suffix == ".pkl"):
        return None
    from zoo.models.m2l.convert import DEFAULT_MODEL, convert_pickle

    return convert_pickle(path, model=name or DEFAULT_MODEL)


def _export(model, folder: Path) -> dict:
    from zoo.models.m2l.export import write_folder

    return write_folder(model, folder)


FAMILY = register_family(Family(
    name="m2l", config_from_dict=config_from_dict, fetch=fetch, open_folder=open_folder,
    formats="a pickled Haiku training state (.pkl)", export=_export))
