"""A zoo model -> a HuggingFace folder transformers loads (``AutoModel``,
``AutoModelForSequenceClassification``, ``AutoModelForTokenClassification``).

The inverse of the conversion, from the same data: the family's name table read backwards
(``zoo.hf.names.hf_names``), its ``config_to_hf`` (the inverse of ``config_from_hf``) and,
per ``model_type``, an ``HFExport`` naming transformers' classes and which of the table's
alternative names that model type writes. Nothing is trusted: before a folder is handed
over, it is read back through the forward conversion and must give the model's own config
and every parameter bit for bit.

What a head becomes: ``classification`` -> ``<Type>ForSequenceClassification`` (``id2label``
from the run's labels); ``regression`` -> the same class with one label and ``problem_type``
``regression``; ``token-classification`` -> ``<Type>ForTokenClassification``; no head or a
``sentence-embedding`` head -> ``<Type>Model`` plus sentence-transformers' ``modules.json``
and pooling files, so that ``SentenceTransformer(DIR)`` pools as the zoo does.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
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


@dataclasses.dataclass(frozen=True)
class _Task:
    suffix: str             # transformers class suffix
    problem_type: str | None = None
    sentence_transformers: bool = False


# head kind (zoo.tasks) -> what transformers calls it; None: the bare encoder
TASKS = {
    None: _Task("Model", sentence_transformers=True),
    "sentence-embedding": _Task("Model", sentence_transformers=True),
    "classification": _Task("ForSequenceClassification", "single_label_classification"),
    "regression": _Task("ForSequenceClassification", "regression"),
    "token-classification": _Task("ForTokenClassification"),
}


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
    return {"modules.json": _dumps(modules),
            "sentence_bert_config.json": _dumps({"max_seq_length": int(max_len),
                                                 "do_lower_case": False}),
            "1_Pooling/config.json": _dumps(pooling_config)}


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def write_folder(arch, model, folder: Path) -> dict:
    """Write ``model`` (a ``ZooModel`` of ``arch``'s family) into the empty ``folder`` as a
    transformers checkpoint, then read it back through the forward conversion and check
    that it gives the same config and parameters. Returns what was written."""
    from safetensors.numpy import save_file

    from zoo.checkpoint import module_params
    from zoo.embeddings import defaults as embedding_defaults
    from zoo.hf.architecture import _shape, _shape_difference, convert_folder
    from zoo.text import tokenizer_files

    config, info = model.config, model.info
    if arch.config_to_hf is None or config.model_type not in arch.exports:
        raise ConfigError(f"{info.encoder}: the {arch.name} family has no transformers export "
                          f"for model_type {config.model_type!r}")
    task = TASKS.get(info.head_kind)
    if task is None:
        raise ConfigError(f"a {info.head_kind} head ({info.head}) has no transformers "
                          f"counterpart the zoo writes; export the encoder alone with "
                          f"--head none")
    spec = arch.exports[config.model_type]
    head = info.head if info.head_kind not in (None, "sentence-embedding") else None
    params = module_params(model.encoder, "encoder/")
    if head is not None:
        params |= module_params(model.head, f"heads/{head}/")
    params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}

    hf = dict(arch.config_to_hf(config))
    hf |= {"model_type": config.model_type, "architectures": [spec.class_prefix + task.suffix],
           "dtype": "float32", "torch_dtype": "float32"}
    if task.suffix != "Model":
        labels = list(info.labels or ["LABEL_0"])
        hf |= {"id2label": {str(i): str(l) for i, l in enumerate(labels)},
               "label2id": {str(l): i for i, l in enumerate(labels)},
               "num_labels": len(labels)}
        if task.problem_type is not None:
            hf["problem_type"] = task.problem_type
    # The special tokens' ids, as transformers' configs name them (a config's own, such as
    # RoBERTa's pad_token_id, wins).
    if model.tokenizer is not None:
        from zoo.text import special_ids

        ids = special_ids(model.tokenizer)
        for key, role in (("pad_token_id", "pad"), ("bos_token_id", "cls"),
                          ("eos_token_id", "sep"), ("cls_token_id", "cls"),
                          ("sep_token_id", "sep")):
            hf.setdefault(key, ids[role])
    back = arch.config_from_hf(hf, "the exported config.json")
    if _shape(back) != _shape(config):  # a zoo option transformers cannot express
        raise ConfigError(f"{info.encoder}: its config has no transformers equivalent "
                          f"({_shape_difference(config, back)})")

    tensors = hf_tensors(arch.table, params, head or "", spec, task.suffix)
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    files = {"config.json": _dumps(hf), **tokenizer_files(model.tokenizer, info.input_len)}
    if task.sentence_transformers:
        style = embedding_defaults(model)
        files |= sentence_transformers_files(config.hidden_size, style["pooling"],
                                             style["normalize"], style["max_len"])
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")

    # Read it back as any user's folder would be read: the same config and every parameter.
    converted = convert_folder(folder, info.encoder, classifier_head=head)
    renamed = {k: v for k, v in converted.params.items()
               if k.startswith(("encoder/", f"heads/{head}/"))}
    differ = sorted(k for k in params if k not in renamed
                    or not np.array_equal(renamed[k], params[k]))
    extra = sorted(set(renamed) - set(params))
    if differ or extra or _shape(converted.config) != _shape(config):
        raise ConfigError(f"the exported folder does not read back as the model "
                          f"(different: {', '.join(differ[:5]) or '-'}; "
                          f"extra: {', '.join(extra[:5]) or '-'})")
    return {"format": "hf", "architectures": hf["architectures"], "files": sorted(
        [WEIGHTS, *files]), "parameters": int(sum(a.size for a in tensors.values()))}
