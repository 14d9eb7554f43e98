"""The DeBERTa-v2 family (DeBERTa-v2, its xlarge sizes' convolution layer included, and
DeBERTa-v3): modeling, presets and the HF name table (HF folders themselves are read by
``zoo.hf``)."""

from zoo.models.deberta_v2 import presets  # noqa: F401  (registers the family and its presets)
from zoo.models.deberta_v2.convert import ARCHITECTURE, config_from_hf
from zoo.models.deberta_v2.modeling import DebertaV2Config, DebertaV2Encoder

__all__ = ["ARCHITECTURE", "DebertaV2Config", "DebertaV2Encoder", "config_from_hf"]
