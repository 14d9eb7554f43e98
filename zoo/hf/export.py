"""What writing a zoo model as a HuggingFace folder needs besides the conversion itself
(``zoo.hf.architecture.write_folder``, the inverse of ``convert_folder``).

- ``HFExport``: per ``model_type``, transformers' class prefix, the encoder's prefix inside
  task models, and which of the name table's alternative names that type writes;
- ``config_keys``: a family's ``{field: (HF keys...)}`` table read backwards;
- ``hf_tensors``: the zoo's flat params under transformers' names (``hf_names``);
- ``sentence_transformers_files``: ``modules.json`` and the pooling files, so that
  ``SentenceTransformer(DIR)`` pools as the zoo does.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Mapping

import numpy as np

from zoo.errors import ConfigError
from zoo.hf.names import NameTable, hf_names

WEIGHTS = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class HFExport:
    """How transformers names one ``model_type``'s models (data, per family)."""

    class_prefix: str          # "Bert": BertModel, BertForSequenceClassification, ...
    base_prefix: str           # "bert.": the encoder's names inside a task model
    never: str = ""            # HF names (regex, after the prefix) this type never has
    never_for: Mapping[str, str] = dataclasses.field(default_factory=dict)  # per class suffix
    in_base: str = ""          # head names that live inside the base model (BERT's pooler)


def config_keys(config: Any, keys: Mapping[str, tuple[str, ...]]) -> dict:
    """``{first HF key: config value}`` for a family's ``{field: (HF keys...)}`` table (the
    inverse of reading the first key present); fields set to None are left out."""
    out = {}
    for field, names in keys.items():
        value = getattr(config, field, None)
        if value is not None:
            out[names[0]] = list(value) if isinstance(value, tuple) else value
    return out


def hf_tensors(table: NameTable, params: Mapping[str, np.ndarray], head: str,
               spec: HFExport, task_suffix: str) -> dict[str, np.ndarray]:
    """The model's flat zoo params under transformers' names (transposed back to torch's
    (out, in) Linear layout). One report for every parameter without exactly one name."""
    never = "|".join(p for p in (spec.never, spec.never_for.get(task_suffix, "")) if p)
    skip = re.compile(f"^({never})") if never else None
    in_base = re.compile(f"^({spec.in_base})") if spec.in_base else None
    tensors, problems = {}, []
    for path, value in params.items():
        names = [(n, t) for n, t in hf_names(table, path, head)
                 if skip is None or not skip.match(n)]
        if not names:
            problems.append(f"{path}: no transformers name for it in a {spec.class_prefix}"
                            f"{task_suffix}")
            continue
        name, transpose = names[0]
        if task_suffix != "Model" and (path.startswith("encoder/")
                                       or (in_base is not None and in_base.match(name))):
            name = spec.base_prefix + name
        array = np.asarray(value, dtype=np.float32)
        if transpose:
            array = array.T
        if name in tensors:
            problems.append(f"{path}: {name} is already written for another parameter")
            continue
        tensors[name] = np.ascontiguousarray(array)
    if problems:
        raise ConfigError("cannot write the model as a transformers checkpoint:\n  "
                          + "\n  ".join(problems))
    return tensors


def sentence_transformers_files(hidden_size: int, pooling: str, normalize: bool,
                                max_len: int) -> dict[str, str]:
    """sentence-transformers' module list: Transformer -> Pooling (-> Normalize)."""
    modules = [{"idx": 0, "name": "0", "path": "", "type":
                "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type":
                "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type":
                        "sentence_transformers.models.Normalize"})
    pooling_config = {"word_embedding_dimension": hidden_size,
                      "pooling_mode_cls_token": pooling == "cls",
                      "pooling_mode_mean_tokens": pooling == "mean",
                      "pooling_mode_max_tokens": pooling == "max",
                      "pooling_mode_mean_sqrt_len_tokens": False}
    return {"modules.json": dumps(modules),
            "sentence_bert_config.json": dumps({"max_seq_length": int(max_len),
                                                 "do_lower_case": False}),
            "1_Pooling/config.json": dumps(pooling_config)}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
