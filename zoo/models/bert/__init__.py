"""The BERT family (BERT, MiniLM, ELECTRA, DistilBERT): modeling, presets and the HF name
table (HF folders themselves are read by ``zoo.hf``)."""

from zoo.models.bert import presets  # noqa: F401  (registers the family and its presets)
from zoo.models.bert.family import config_from_hf
from zoo.models.bert.modeling import BertConfig, BertEncoder

__all__ = ["BertConfig", "BertEncoder", "config_from_hf"]
