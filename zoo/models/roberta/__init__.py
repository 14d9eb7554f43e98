"""The RoBERTa family (RoBERTa, DistilRoBERTa, XLM-RoBERTa): modeling, presets and the HF
name table (HF folders themselves are read by ``zoo.hf``)."""

from zoo.models.roberta import presets  # noqa: F401  (registers the family and its presets)
from zoo.models.roberta.convert import ARCHITECTURE, config_from_hf
from zoo.models.roberta.modeling import RobertaConfig, RobertaEncoder

__all__ = ["ARCHITECTURE", "RobertaConfig", "RobertaEncoder", "config_from_hf"]
