"""The ModernBERT family: modeling, presets and the HF name table (``zoo.hf`` reads the
checkpoint folders)."""

from zoo.models.modernbert import presets  # noqa: F401  (registers the family and its presets)
from zoo.models.modernbert.convert import ARCHITECTURE, TABLE, config_from_hf
from zoo.models.modernbert.modeling import ModernBertConfig, ModernBertEncoder

__all__ = ["ARCHITECTURE", "TABLE", "ModernBertConfig", "ModernBertEncoder", "config_from_hf"]
