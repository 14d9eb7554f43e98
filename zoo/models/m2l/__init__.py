"""The M2L 2022 tutorial family: modeling, presets, the Haiku name table and safe pickle reading."""

from zoo.models.m2l import presets  # noqa: F401  (registers the family and its presets)
from zoo.models.m2l.modeling import M2LConfig, M2LEncoder

__all__ = ["M2LConfig", "M2LEncoder"]
