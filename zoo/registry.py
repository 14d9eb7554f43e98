"""Name -> factory registries for encoders and heads (the one place models are discovered).

An encoder entry is a config plus the module class that builds it; a head entry is a
factory taking the encoder's config. Tests are parametrised over these registries, so
a model is tested by being registered.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Any, Callable, Literal

from flax import nnx

HeadKind = Literal["mlm", "classification"]


@dataclasses.dataclass(frozen=True)
class HubSource:
    """Where the published (pickled Haiku) weights of an encoder live."""

    repo_id: str
    checkpoint: str
    tokenizer: str | None = None


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    name: str
    config: Any  # a frozen dataclass with hidden_size, vocab_size, max_len and to_dict()
    module: type[nnx.Module]
    description: str
    source: HubSource | None = None  # None: no published weights (e.g. test configurations)

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


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    if spec.name in _ENCODERS:
        raise ValueError(f"encoder {spec.name!r} is already registered")
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
    close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(table))})")


def get_encoder(name: str) -> EncoderSpec:
    return _lookup(_ENCODERS, name, "model")


def get_head(name: str) -> HeadSpec:
    return _lookup(_HEADS, name, "head")


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
