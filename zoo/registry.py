"""Name -> spec registries for encoders and heads (the one place models are discovered).

An encoder entry is a config plus the module class that builds it and the *family* it
belongs to. The family (one folder under ``zoo/models/``) is the only code that knows a
weight format: it says how to rebuild a config from a manifest, how to fetch and convert
published weights, and how to open a foreign checkpoint folder. The core (``load``, the
checkpoint format, the trainer) only ever sees the ``Converted`` result: flat parameter
arrays named like the zoo's modules, a manifest and a tokenizer.

Tests are parametrised over these registries, so a model is tested by being registered.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from pathlib import Path
from typing import Any, Callable, Mapping

from flax import nnx

from zoo.errors import UnknownNameError, ZooError

HeadKind = str  # the name of the head's task (zoo.tasks): "classification", "mlm", ...


class WeightsNotFoundError(ZooError, FileNotFoundError):
    """No weights for a model could be found locally or downloaded."""


@dataclasses.dataclass
class Converted:
    """Weights read from a family's own format, named and shaped for the zoo's modules.

    ``params`` is flat: ``{'encoder/...': array, 'heads/<name>/...': array}``; ``heads``
    describes the stored heads as a model directory's manifest does
    (``{name: {"kind": ..., "num_classes": ..., "labels": [...]}}``).
    """

    model: str
    config: Any
    params: dict[str, Any]
    heads: dict[str, dict]
    default_head: str | None
    tokenizer: Any | None  # a tokenizers.Tokenizer, or None
    source: dict
    notes: tuple[str, ...] = ()  # what the conversion ignored on purpose, for reports

    def manifest(self) -> dict:
        return {"model": self.model, "config": self.config.to_dict(), "heads": self.heads,
                "default_head": self.default_head, "source": self.source}


@dataclasses.dataclass(frozen=True)
class Family:
    """What the core needs from an architecture family (each field a plain function).

    - ``config_from_dict(d)``: the family's config from a manifest's ``config`` (validated);
    - ``fetch(spec, download_dir)``: the published weights of ``spec`` as ``Converted``
      (raises ``WeightsNotFoundError`` naming the commands to run when offline);
    - ``open_folder(path, name)``: a foreign checkpoint folder (or file) of this family as
      ``Converted``, or ``None`` when ``path`` is not in the family's format;
    - ``export(model, folder)``: the model written in the family's own interchange format.
    """

    name: str
    config_from_dict: Callable[[Mapping], Any]
    fetch: Callable[["EncoderSpec", Path], Converted] | None = None
    open_folder: Callable[[Path, str | None], Converted | None] | None = None
    formats: str = ""  # what ``open_folder`` accepts, for error messages
    # ``export(model, folder)``: write a loaded model into the empty ``folder`` in the
    # family's interchange format (HF families: a transformers folder); returns a summary.
    export: Callable[[Any, Path], dict] | None = None


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    name: str
    config: Any  # a frozen dataclass with hidden_size, vocab_size, max_len and to_dict()
    module: type[nnx.Module]
    description: str
    family: Family
    source: Any = None  # the family's description of published weights; None: none
    # Training defaults when fine-tuning from this encoder's pre-trained weights
    # (e.g. {"learning_rate": 5e-5}); flags the user sets win.
    finetune_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Sentence-embedding defaults of ``model.encode`` (``zoo.embeddings``): "pooling"
    # ("mean" | "cls" | "max"), "normalize" (bool), "max_len" (tokens read at most).
    embedding: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def build(self, rngs: nnx.Rngs, config: Any | None = None) -> nnx.Module:
        return self.module(config or self.config, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    name: str
    kind: HeadKind
    description: str
    factory: Callable[..., nnx.Module]  # (encoder_config, *, num_classes, rngs) -> head
    num_classes: int | None = None  # default for classification heads
    labels: tuple[str, ...] | None = None

    def build(self, encoder_config: Any, rngs: nnx.Rngs, num_classes: int | None = None):
        return self.factory(encoder_config, num_classes=num_classes or self.num_classes, rngs=rngs)

    def label_names(self, num_classes: int) -> tuple[str, ...]:
        if self.labels is not None and len(self.labels) == num_classes:
            return self.labels
        return tuple(f"class_{i}" for i in range(num_classes))


_ENCODERS: dict[str, EncoderSpec] = {}
_HEADS: dict[str, HeadSpec] = {}
_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    if spec.name in _ENCODERS:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    if _FAMILIES.get(spec.family.name) is not spec.family:
        raise ValueError(f"encoder {spec.name!r}: register its family {spec.family.name!r} first")
    _ENCODERS[spec.name] = spec
    return spec


def register_head(spec: HeadSpec) -> HeadSpec:
    if spec.name in _HEADS:
        raise ValueError(f"head {spec.name!r} is already registered")
    _HEADS[spec.name] = spec
    return spec


def _lookup(table: dict, name: str, what: str):
    if name in table:
        return table[name]
    close = difflib.get_close_matches(str(name), list(table), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(table))})")


def get_encoder(name: str) -> EncoderSpec:
    return _lookup(_ENCODERS, name, "model")


def get_head(name: str) -> HeadSpec:
    return _lookup(_HEADS, name, "head")


def families() -> tuple[Family, ...]:
    return tuple(_FAMILIES.values())


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered encoder names matching a shell-style wildcard, sorted.

    ``pretrained=True`` keeps only encoders with published weights.
    """
    return sorted(
        name
        for name, spec in _ENCODERS.items()
        if fnmatch.fnmatchcase(name, pattern) and (not pretrained or spec.source is not None)
    )


def list_heads(pattern: str = "*") -> list[str]:
    return sorted(name for name in _HEADS if fnmatch.fnmatchcase(name, pattern))
