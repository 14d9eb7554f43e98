"""The BERT family (BERT, MiniLM, ELECTRA, DistilBERT): modeling, presets, the HF name table
and torch-free checkpoint reading (safetensors, or an allow-listed ``pytorch_model.bin``)."""

from zoo.models.bert import presets  # noqa: F401  (registers the family and its presets)
from zoo.models.bert.family import config_from_hf, convert_folder, read_tokenizer
from zoo.models.bert.modeling import BertConfig, BertEncoder

__all__ = ["BertConfig", "BertEncoder", "config_from_hf", "convert_folder", "read_tokenizer"]
