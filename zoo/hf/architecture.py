"""HF checkpoint folders -> ``Converted``, for every architecture that registers a converter,
and back (``write_folder``: a loaded model as a folder transformers reads).

An architecture family (``zoo/models/<family>/``) brings an ``Architecture``: the HF
``model_type`` values it reads, its config class and ``config.json`` parser, and its name
table. ``make_family`` registers it and returns the registry ``Family`` whose ``fetch`` and
``open_folder`` are the generic ones below. Everything else is shared: the folder checks,
safetensors / ``.bin``, the tokenizer, which head a task model's classifier becomes
(from ``architectures`` in ``config.json``), preset matching and the hub download.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from zoo.errors import ConfigError
from zoo.fsutil import json_or_none
from zoo.hf.files import (INDEX_FILES, SMALL_FILES, WEIGHT_FILES, check_complete,
                          is_hf_folder, read_json, read_weights, shards, weights_file,
                          weights_sha256)
from zoo.hf.export import HFExport, dumps, hf_tensors, sentence_transformers_files
from zoo.hf.names import MLM_DECODER, NameTable, hf_names
from zoo.hf.tokenizer import read_tokenizer
from zoo.registry import Converted, Family, WeightsNotFoundError, register_family

CONVERTER_VERSION = "2"
# What every HF family opens (one phrase, so that a list of formats names it once).
FORMATS = ("a HuggingFace checkpoint folder (config.json and model.safetensors or "
           "pytorch_model.bin)")
# Tokenizer files a download also tries (a repository ships one kind or another).
# The slow tokenizers' files, fetched when a repo has no tokenizer.json (microsoft/deberta-v3-*
# ship only spm.model).
TOKENIZER_DOWNLOADS = ("vocab.json", "merges.txt", "spm.model", "added_tokens.json")


@dataclasses.dataclass(frozen=True)
class HFSource:
    """A preset's published weights: a HuggingFace hub repository id."""

    repo_id: str
    classifier_head: str = "classifier"  # the zoo head a hub classifier is stored as


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What one family tells the HF layer (see the module docstring)."""

    name: str                                   # the registry family's name
    model_types: Mapping[str, str]              # HF model_type -> its "<type>-custom" preset
    config_class: type
    config_from_hf: Callable[[Mapping, str], Any]  # (config.json, where) -> config
    table: NameTable
    # Edits mapped params in place (e.g. unties a decoder); may return notes.
    finish: Callable[[dict, Any], list[str] | None] | None = None
    # HF names (after the prefix) of an MLM head layout that has no decoder weight of its own
    # whatever tie_word_embeddings says (DeBERTa's lm_predictions.*: always the embeddings).
    tied_mlm_layout: str | None = None
    # Export (zoo.hf.export): config -> config.json keys (the inverse of config_from_hf), and
    # per model_type how transformers names its classes and which table names it writes.
    config_to_hf: Callable[[Any], dict] | None = None
    exports: Mapping[str, "HFExport"] = dataclasses.field(default_factory=dict)


_ARCHITECTURES: dict[str, Architecture] = {}  # model_type -> architecture
_FAMILIES: dict[str, Family] = {}             # architecture name -> registry family

@dataclasses.dataclass(frozen=True)
class TaskClass:
    """An HF task-model class (by its name's suffix) and the zoo head its task head becomes."""

    suffix: str
    head: str
    keeps_pooler: bool = False   # BERT's pooler is the first layer of this head
    lower_labels: bool = False   # id2label names lowercased ("POSITIVE" -> "positive")
    renamable: bool = True       # stored under the name --head gives (else the head's own)


TASK_CLASSES = (
    TaskClass("ForSequenceClassification", "classifier", keeps_pooler=True, lower_labels=True),
    TaskClass("ForTokenClassification", "token-classifier"),
    TaskClass("ForMaskedLM", "mlm", renamable=False),
    TaskClass("ForPreTraining", "mlm", renamable=False),
)
HF_REGRESSION = "regression"  # a value of HF's config.json problem_type
HF_MULTI_LABEL = "multi_label_classification"  # another: a sigmoid per label
# A sequence classifier with one output (num_labels 1, or problem_type regression).
REGRESSION = TaskClass("ForSequenceClassification", "regressor", keeps_pooler=True)
# A sequence classifier whose labels are independent (problem_type multi_label_classification).
MULTI_LABEL = TaskClass("ForSequenceClassification", "multi-label-classifier",
                        keeps_pooler=True)
MLM_HEAD = "mlm"  # where an MLM head is stored, whatever the task model (ELECTRA has none)
NO_TASK = TaskClass("Model", "", renamable=False)


def make_family(arch: Architecture) -> Family:
    """Register ``arch`` and its registry family (one call per family folder)."""
    taken = sorted(set(arch.model_types) & set(_ARCHITECTURES))
    if taken:
        raise ValueError(f"model_type(s) {', '.join(taken)} already have a converter")
    family = register_family(Family(
        name=arch.name,
        config_from_dict=functools.partial(config_from_dict, arch),
        fetch=functools.partial(fetch, arch),
        open_folder=functools.partial(open_folder, arch),
        formats=FORMATS,
        export=functools.partial(write_folder, arch) if arch.config_to_hf else None))
    for model_type in arch.model_types:
        _ARCHITECTURES[model_type] = arch
    _FAMILIES[arch.name] = family
    return family


def model_types() -> list[str]:
    return sorted(_ARCHITECTURES)


def make_config(config_class: type, values: Mapping, where: str):
    """``config_class(**values)``, its complaints (ValueError, TypeError) as one
    ``ConfigError`` line that starts with ``where``."""
    try:
        return config_class(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _size(value) -> bool:
    """A positive integer (not a bool), as config.json's sizes must be."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_head_size(hf: Mapping, key: str, where: str) -> None:
    """config.json's per-head width ``key`` (DeBERTa's ``attention_head_size``, ModernBERT's
    ``head_dim``), when set, must be ``hidden_size / num_attention_heads``: the zoo's
    attention has no other. Checked before any arithmetic on it: a string times a huge
    head count would fill the memory, a dict would raise TypeError."""
    value = hf.get(key)
    if value is None:
        return
    hidden, heads = hf.get("hidden_size"), hf.get("num_attention_heads")
    sized = _size(hidden) and _size(heads)
    if not _size(value) or (sized and value * heads != hidden):
        only = f" = {hidden}/{heads}" if sized else ""
        raise ConfigError(f"{where}: {key} {value!r} is not supported (the zoo's head size is "
                          f"hidden_size / num_attention_heads{only})")


def config_from_dict(arch: Architecture, values: Mapping):
    """The family's config from a zoo manifest's ``config`` (unknown keys refused)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"config must be a JSON object, not {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(arch.config_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"config: unknown {arch.name} field(s) {', '.join(unknown)}")
    return make_config(arch.config_class, values, "config")


def architecture_of(hf: Any, where: str) -> Architecture:
    if not isinstance(hf, Mapping):
        raise ConfigError(f"{where}: expected a JSON object")
    model_type = hf.get("model_type")
    if not isinstance(model_type, str) or model_type not in _ARCHITECTURES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported "
                          f"(supported: {', '.join(model_types())})")
    return _ARCHITECTURES[model_type]


def open_folder(arch: Architecture, path: Path, name: str | None) -> Converted | None:
    """An HF folder of this architecture as ``Converted``; not an HF folder, or another
    registered architecture's: None. A model_type no architecture reads is an error."""
    if not is_hf_folder(path):
        hf = json_or_none(path / "config.json") if path.is_dir() else None
        if isinstance(hf, dict) and hf.get("model_type") in arch.model_types:
            check_complete(path)  # this family's config without weights: name what is missing
        return None
    hf = read_json(path / "config.json")
    if architecture_of(hf, str(path / "config.json")) is not arch:
        return None
    return convert_folder(path, name)


def check_task_keys(hf: Mapping, where: str) -> None:
    """The task keys every HF config.json may hold, checked before they are used:
    ``architectures`` (a list of class names; a task class the zoo has no head for, e.g.
    ``...ForQuestionAnswering``, ``...ForMultipleChoice``, ``...ForCausalLM``, is refused
    rather than read as another head), ``id2label`` ({id: name}), ``num_labels``,
    ``problem_type``."""
    classes = hf.get("architectures")
    if classes is not None and (not isinstance(classes, list) or not all(
            isinstance(c, str) and c.isidentifier() for c in classes)):  # Python class names
        raise ConfigError(f"{where}: architectures must be a list of class names, "
                          f"got {classes!r}")
    id2label = hf.get("id2label")
    if id2label is not None and not (isinstance(id2label, Mapping) and all(
            isinstance(k, str) and k.isascii() and k.isdigit() for k in id2label)):
        raise ConfigError(f"{where}: id2label must be an object of id -> label, "
                          f"got {str(id2label)[:80]}")
    labels = hf.get("num_labels")
    if labels is not None and (isinstance(labels, bool) or not isinstance(labels, int)
                               or labels < 1):
        raise ConfigError(f"{where}: num_labels must be a positive integer, got {labels!r}")
    problem = hf.get("problem_type")
    kinds = ("single_label_classification", HF_MULTI_LABEL, HF_REGRESSION)
    if problem is not None and problem not in kinds:
        raise ConfigError(f"{where}: problem_type must be one of {', '.join(kinds)}, "
                          f"got {problem!r}")
    for cls in classes or []:
        other = re.search(r"For([A-Z]\w*)$", cls)
        if other and not any(cls.endswith(t.suffix) for t in TASK_CLASSES):
            words = re.findall(r"[A-Z][a-z]+|[A-Z]+(?![a-z])|\w+", other.group(1))
            task = "-".join(w if w.isupper() else w.lower() for w in words)
            raise ConfigError(
                f"{where}: architectures names {cls}, and the zoo has no {task} head (it "
                f"reads {', '.join(t.suffix for t in TASK_CLASSES)} and bare models); for "
                "its encoder alone, save it with transformers' AutoModel "
                "(AutoModel.from_pretrained(DIR).save_pretrained(OUT)) and load OUT")


def task_class(hf: Mapping, tensors: Mapping, table: NameTable) -> TaskClass:
    """The checkpoint's task head, from ``architectures`` in config.json (else from its
    tensor names: a ``classifier`` means sequence classification). A sequence classifier
    with one output is a regressor (``problem_type`` regression, ``num_labels`` 1, one
    ``id2label`` entry, or one row in its output layer); one with ``problem_type``
    multi_label_classification a multi-label classifier."""
    def sequence_class() -> TaskClass:
        if hf.get("problem_type") == HF_MULTI_LABEL:
            return MULTI_LABEL
        rows = classifier_rows(tensors, table)
        regression = (hf.get("problem_type") == HF_REGRESSION or hf.get("num_labels") == 1
                      or len(hf.get("id2label") or {0: 0, 1: 1}) == 1 or rows == [1])
        return REGRESSION if regression else TASK_CLASSES[0]

    for cls in hf.get("architectures") or []:
        for candidate in TASK_CLASSES:
            if cls.endswith(candidate.suffix):
                return sequence_class() if candidate is TASK_CLASSES[0] else candidate
        if cls.endswith(NO_TASK.suffix):
            return NO_TASK
    names = [table.strip(n) for n in tensors]
    if any(n.startswith(("classifier", "pre_classifier")) for n in names):
        return sequence_class()
    return NO_TASK


def classifier_rows(tensors: Mapping, table: NameTable) -> list[int]:
    """The output rows of the checkpoint's sequence classifier layer ([] when none)."""
    return [int(array.shape[0]) for name, array in tensors.items()
            if table.strip(name) in ("classifier.weight", "classifier.out_proj.weight")
            and getattr(array, "ndim", 0) == 2]


def convert_folder(path: str | Path, name: str | None = None,
                   classifier_head: str | None = None) -> Converted:
    """An HF checkpoint folder as ``Converted`` (strict: one report for every problem)."""
    from zoo.checkpoint import check_tree
    from zoo.model import expected_params
    from zoo.registry import get_encoder, get_head, list_models
    from zoo.tasks import get_task
    from zoo.text import check_fits

    path = Path(path).expanduser()
    check_complete(path)
    where = str(path / "config.json")
    hf = read_json(path / "config.json")
    arch = architecture_of(hf, where)
    config = arch.config_from_hf(hf, where)
    if config.max_len < 2:  # its positions: encode_texts would refuse every text later
        raise ConfigError(f"{where}: max_position_embeddings {config.max_position_embeddings} "
                          f"leaves room for {config.max_len} token(s); at least 2 ([CLS] and "
                          "[SEP]) are needed")
    check_task_keys(hf, where)
    family = _FAMILIES[arch.name]
    model = name or _preset_for(arch, config, hf, list_models())
    spec = get_encoder(model)
    if spec.family is not family:
        raise ConfigError(f"{path} holds a {hf['model_type']} checkpoint, but {model!r} is a "
                          f"{spec.family.name} model")
    if getattr(spec.config, "model_type", None) != getattr(config, "model_type", None):
        raise ConfigError(f"{where}: model_type {config.model_type!r}, but {model!r} is a "
                          f"{spec.config.model_type} model")
    if spec.source is not None and _shape(spec.config) != _shape(config):
        raise ConfigError(
            f"{where} describes another architecture than the preset {model!r} "
            f"({_shape_difference(spec.config, config)}); load it as "
            f"{arch.model_types[hf['model_type']]} or without a model name")
    source_id = getattr(spec.source, "repo_id", "") or str(hf.get("_name_or_path", ""))

    # The tokenizer first: a folder without one fails before hundreds of MB are read.
    tokenizer = read_tokenizer(path, source_id)
    tensors = read_weights(path)
    task_cls = task_class(hf, tensors, arch.table)
    head_name = task_cls.head
    if task_cls is TASK_CLASSES[0]:
        head_name = getattr(spec.source, "classifier_head", None) or head_name
    if classifier_head is not None and task_cls.renamable:
        want = get_head(task_cls.head).kind
        if get_head(classifier_head).kind != want:
            raise ConfigError(f"{path} holds a {want} head; --head {classifier_head} is a "
                              f"{get_head(classifier_head).kind} head")
        head_name = classifier_head
    if task_cls is REGRESSION:
        id2label = hf.get("id2label")
        said = len(id2label) if isinstance(id2label, Mapping) else hf.get("num_labels")
        outputs = max([said if isinstance(said, int) else 1, *classifier_rows(tensors,
                                                                                arch.table)])
        if outputs > 1:
            raise ConfigError(f"{where}: problem_type {HF_REGRESSION} with {outputs} outputs is "
                              "not supported (the zoo's regression head predicts one score "
                              "per text)")
    params, unmapped, notes = arch.table.map(tensors, head_name or "classifier",
                                             keep_pooler=task_cls.keeps_pooler)
    stored_decoder = f"{MLM_DECODER}/kernel" in params
    if arch.finish is not None:  # may return notes on what it dropped on purpose
        try:
            finished = arch.finish(params, config)
        except ConfigError as err:  # a tensor it cannot place: name the weights
            raise ConfigError(f"{weights_file(path)}: {err}") from None
        notes = sorted(notes + list(finished or ()))
    always_tied = arch.tied_mlm_layout is not None and any(
        re.match(arch.tied_mlm_layout, arch.table.strip(n)) for n in tensors)
    if hf.get("tie_word_embeddings") is False and not stored_decoder and not always_tied \
            and f"{MLM_DECODER}/kernel" in params:
        # ``finish`` tied a decoder the config says is untied: transformers would leave it
        # random; the zoo refuses rather than predict with another matrix than the file's
        names = [n for n, _ in hf_names(arch.table, f"{MLM_DECODER}/kernel", "")]
        raise ConfigError(f"{weights_file(path)} has no MLM decoder weight "
                          f"({names[0] if names else 'decoder.weight'}), but {where} says "
                          "tie_word_embeddings false (the decoder is not the word embeddings)")
    heads: dict[str, dict] = {}
    for stored in dict.fromkeys(n for n in (head_name, MLM_HEAD) if n):
        if not any(k.startswith(f"heads/{stored}/") for k in params):
            continue
        kind = get_head(stored).kind
        heads[stored] = {"kind": kind}
        kernel = params.get(f"heads/{stored}/classifier/kernel")
        if get_task(kind).has_classes and kernel is not None:
            n = int(kernel.shape[1])
            _check_num_labels(hf, n, where, stored)
            heads[stored] |= {"num_classes": n, "labels": _labels(
                hf, n, stored, lower=task_cls.lower_labels)}

    expected = expected_params(model, {n: meta.get("num_classes") for n, meta in heads.items()},
                               config=config)
    check_tree(expected, params, source=f"{path} (as {model})", unmapped=unmapped,
               unmapped_title="HF names with no zoo name")
    check_fits(tokenizer, config.vocab_size, str(path))
    weights = weights_file(path)
    default = head_name if head_name in heads else (MLM_HEAD if MLM_HEAD in heads else None)
    return Converted(
        model=model, config=config, params=params, heads=heads, default_head=default,
        tokenizer=tokenizer,
        source={"kind": "huggingface", "path": str(path), "hub_id": source_id or None,
                "file": weights.name, "sha256": weights_sha256(path),
                "converter_version": CONVERTER_VERSION},
        notes=tuple(notes),
    )


def _check_num_labels(hf: Mapping, num_classes: int, where: str, head: str) -> None:
    """config.json's label count (``id2label``, ``num_labels``) must be the classifier's."""
    id2label, num_labels = hf.get("id2label"), hf.get("num_labels")
    said = len(id2label) if isinstance(id2label, Mapping) else num_labels
    if isinstance(said, int) and not isinstance(said, bool) and said != num_classes:
        raise ConfigError(f"{where}: {said} labels, but the {head} head's weights have "
                          f"{num_classes} outputs")


def _labels(hf: Mapping, num_classes: int, head: str, *, lower: bool) -> list[str]:
    """The class names of ``id2label``; transformers' own defaults (``LABEL_<i>``) when
    config.json has none (transformers 5 writes none for the default 2 labels, 4 wrote the
    defaults); the head's generic names when the file's are unusable (duplicates, "None")."""
    from zoo.registry import get_head

    id2label = hf.get("id2label")
    if id2label is None:
        id2label = {str(i): f"LABEL_{i}" for i in range(num_classes)}
    if isinstance(id2label, Mapping) and len(id2label) == num_classes:
        try:
            labels = [str(id2label.get(str(i), id2label.get(i))) for i in range(num_classes)]
            labels = [label.lower() for label in labels] if lower else labels
            if "none" not in labels and len(set(labels)) == num_classes:
                return labels
        except (TypeError, AttributeError):
            pass
    return list(get_head(head).label_names(num_classes))


def _preset_for(arch: Architecture, config, hf: Mapping, names: list[str]) -> str:
    """The registered preset a foreign folder is loaded as: same hub id, else same shape,
    else the model type's ``-custom`` entry."""
    from zoo.registry import get_encoder

    family = _FAMILIES[arch.name]
    ours = [n for n in names if get_encoder(n).family is family
            and get_encoder(n).source is not None
            and getattr(get_encoder(n).config, "model_type", None) == config.model_type]
    hub_id = str(hf.get("_name_or_path", ""))
    for n in ours:
        if hub_id and getattr(get_encoder(n).source, "repo_id", None) == hub_id \
                and _shape(get_encoder(n).config) == _shape(config):
            return n
    for n in ours:
        if _shape(get_encoder(n).config) == _shape(config):
            return n
    return arch.model_types[hf["model_type"]]


_NOT_SHAPE = ("dropout", "attention_dropout", "classifier_dropout", "embedding_dropout",
              "max_len")


def _shape(config) -> dict:
    """The fields that decide parameter shapes and numerics (not dropout rates)."""
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_SHAPE}


def _shape_difference(want, got) -> str:
    a, b = _shape(want), _shape(got)
    return ", ".join(f"{k} {b.get(k)} instead of {a[k]}" for k in a if a[k] != b.get(k))


# ------------------------------------------------------------------------------ export


def write_folder(arch: Architecture, model, folder: Path) -> dict:
    """Write ``model`` (a ``ZooModel`` of ``arch``'s family) into the empty ``folder`` as a
    transformers checkpoint, then read it back through the forward conversion and check
    that it gives the same config and parameters. Returns what was written."""
    from safetensors.numpy import save_file

    from zoo.checkpoint import module_params
    from zoo.embeddings import defaults as embedding_defaults
    from zoo.text import special_ids, tokenizer_files

    config, info = model.config, model.info
    if arch.config_to_hf is None or config.model_type not in arch.exports:
        raise ConfigError(f"{info.encoder}: the {arch.name} family has no transformers export "
                          f"for model_type {config.model_type!r}")
    suffix = NO_TASK.suffix if model.task is None else model.task.hf_class
    if suffix is None:
        raise ConfigError(f"a {info.head_kind} head ({info.head}) has no transformers "
                          f"counterpart the zoo writes; export the encoder alone with "
                          f"--head none")
    if model.tokenizer is None:
        raise ConfigError(f"{info.encoder}: the model has no tokenizer; a transformers folder "
                          "needs one (load the model from a folder or run that has it)")
    spec = arch.exports[config.model_type]
    head = info.head if suffix != NO_TASK.suffix else None  # an embedder has no parameters
    params = module_params(model.encoder, "encoder/")
    if head is not None:
        params |= module_params(model.head, f"heads/{head}/")
    params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}

    hf = dict(arch.config_to_hf(config))
    hf |= {"model_type": config.model_type, "architectures": [spec.class_prefix + suffix],
           "dtype": "float32", "torch_dtype": "float32"}
    if suffix != NO_TASK.suffix:
        labels = list(info.labels or [f"LABEL_{i}" for i in range(info.num_classes or 1)])
        hf |= {"id2label": {str(i): str(l) for i, l in enumerate(labels)},
               "label2id": {str(l): i for i, l in enumerate(labels)},
               "num_labels": len(labels)}
        if model.task.hf_problem_type is not None:
            hf["problem_type"] = model.task.hf_problem_type
    # The special tokens' ids, as transformers' configs name them (a config's own, such as
    # RoBERTa's pad_token_id, wins).
    ids = special_ids(model.tokenizer)
    for key, role in (("pad_token_id", "pad"), ("bos_token_id", "cls"), ("eos_token_id", "sep"),
                      ("cls_token_id", "cls"), ("sep_token_id", "sep")):
        hf.setdefault(key, ids[role])
    back = arch.config_from_hf(hf, "the exported config.json")
    if _shape(back) != _shape(config):  # a zoo option transformers cannot express
        raise ConfigError(f"{info.encoder}: its config has no transformers equivalent "
                          f"({_shape_difference(config, back)})")

    tensors = hf_tensors(arch.table, params, head or "", spec, suffix)
    save_file(tensors, str(folder / WEIGHT_FILES[0]), metadata={"format": "pt"})
    files = {"config.json": dumps(hf), **tokenizer_files(model.tokenizer, info.input_len)}
    if suffix == NO_TASK.suffix:
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
        [WEIGHT_FILES[0], *files]), "parameters": int(sum(a.size for a in tensors.values()))}


# ------------------------------------------------------------------------------ the hub


def _manual(repo: str, name: str) -> str:
    return (f"on a machine with network access run `huggingface-cli download {repo} "
            f"{' '.join(SMALL_FILES)} model.safetensors --local-dir DIR` (older repos ship "
            f"pytorch_model.bin instead; a repo without tokenizer.json needs vocab.json + "
            f"merges.txt or spm.model), copy DIR here, then "
            f"`python -m convert.hf_to_flax DIR --model {name}` (or pass weights=DIR)")


def download(repo: str, download_dir: Path, name: str | None = None) -> Path:
    """Fetch only what a conversion needs (safetensors preferred over .bin) into a folder."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        def get(filename: str) -> Path | None:
            try:
                return Path(huggingface_hub.hf_hub_download(repo, filename,
                                                            local_dir=download_dir))
            except LocalEntryNotFoundError:  # offline: not "the repo lacks this file"
                raise
            except EntryNotFoundError:
                return None

        for filename in SMALL_FILES:
            get(filename)
        if not (Path(download_dir) / "tokenizer.json").is_file():
            for filename in TOKENIZER_DOWNLOADS:
                get(filename)
        if get(WEIGHT_FILES[0]) is None and get(WEIGHT_FILES[1]) is None \
                and not any(_get_shards(get, index) for index in INDEX_FILES):
            raise WeightsNotFoundError(f"{repo} has neither {' nor '.join(WEIGHT_FILES)} "
                                       "(nor shards of either)")
    except WeightsNotFoundError:
        raise
    except Exception as err:  # offline, hub down, auth: all end the same way
        raise WeightsNotFoundError(
            f"no local weights for {name or repo!r} and the download from {repo} failed "
            f"({type(err).__name__}: {str(err)[:160]}). To work offline, "
            f"{_manual(repo, name or '<preset>')}") from None
    return Path(download_dir)


def _get_shards(get: Callable[[str], Path | None], index_name: str) -> bool:
    """Download a shard index and every shard it lists; False when the repo has no index."""
    index = get(index_name)
    if index is None:
        return False
    for shard in sorted(shards(index, present=False)):
        if get(shard) is None:
            raise WeightsNotFoundError(f"{index_name} lists {shard}, which the repo lacks")
    return True


def fetch(arch: Architecture, spec, download_dir: Path) -> Converted:
    """A preset's published weights: downloaded once, then converted."""
    return convert_folder(download(spec.source.repo_id, download_dir, spec.name), spec.name)
