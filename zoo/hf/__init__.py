"""The HuggingFace layer: what every HF checkpoint shares, whatever its architecture.

Folders and hub downloads, safetensors (float32, float16, bfloat16) and the allow-listed
``pytorch_model.bin`` reader, ``config.json``, tokenizers (``tokenizer.json``, byte-level BPE
files, ``vocab.txt``) with their special tokens, the name-mapping helper and the generic
conversion. Each family (``zoo/models/<family>/``) brings only an ``Architecture``: its
``model_type`` values, config parser and name table, registered with ``make_family``.
"""

from zoo.hf.architecture import (Architecture, HFSource, check_head_size, convert_folder,
                                 download, make_config, make_family, model_types)
from zoo.hf.export import HFExport, config_keys
from zoo.hf.files import is_hf_folder, read_safetensors, read_weights
from zoo.hf.names import POST_LN_RULES, NameTable, resolve_decoder
from zoo.hf.tokenizer import read_tokenizer

__all__ = ["Architecture", "HFExport", "HFSource", "check_head_size", "config_keys", "NameTable", "convert_folder", "download",
           "is_hf_folder", "make_config", "make_family", "POST_LN_RULES", "model_types", "read_safetensors", "read_tokenizer",
           "read_weights", "resolve_decoder"]
