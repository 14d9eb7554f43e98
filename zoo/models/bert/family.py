"""The BERT family as the core sees it: HF ``config.json`` -> ``BertConfig``, one name table
HF -> zoo, HF folders (safetensors or a safely read ``pytorch_model.bin``) -> ``Converted``,
and fetching a preset's files from the HuggingFace hub.

Nothing here unpickles with ``pickle.load``: safetensors is a JSON header plus raw arrays;
``pytorch_model.bin`` goes through ``torch_bin.read_torch_bin`` (an allow-listed reader).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from zoo.errors import ConfigError
from zoo.models.bert.modeling import BertConfig
from zoo.registry import Converted, Family, WeightsNotFoundError, register_family

CONVERTER_VERSION = "1"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
SMALL_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json")


@dataclasses.dataclass(frozen=True)
class HFSource:
    """A preset's published weights: a HuggingFace hub repository id."""

    repo_id: str
    classifier_head: str = "classifier"  # the zoo head a hub classifier is stored as


# ------------------------------------------------------------------------------ configs


def config_from_dict(values: Mapping) -> BertConfig:
    """A ``BertConfig`` from a zoo manifest's ``config`` (unknown keys refused)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"config must be a JSON object, not {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(BertConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"config: unknown BERT-family field(s) {', '.join(unknown)}")
    try:
        return BertConfig(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config: {err}") from None


# HF config.json key for each BertConfig field, per model type (first present wins).
_HF_KEYS = {
    "bert": {
        "vocab_size": ("vocab_size",), "hidden_size": ("hidden_size",),
        "num_layers": ("num_hidden_layers",), "num_heads": ("num_attention_heads",),
        "intermediate_size": ("intermediate_size",),
        "max_position_embeddings": ("max_position_embeddings",),
        "type_vocab_size": ("type_vocab_size",), "layer_norm_eps": ("layer_norm_eps",),
        "hidden_act": ("hidden_act",), "dropout": ("hidden_dropout_prob",),
        "attention_dropout": ("attention_probs_dropout_prob",),
        "classifier_dropout": ("classifier_dropout", "hidden_dropout_prob"),
        "embedding_size": ("embedding_size",),
    },
    "distilbert": {
        "vocab_size": ("vocab_size",), "hidden_size": ("dim",), "num_layers": ("n_layers",),
        "num_heads": ("n_heads",), "intermediate_size": ("hidden_dim",),
        "max_position_embeddings": ("max_position_embeddings",),
        "hidden_act": ("activation",), "dropout": ("dropout",),
        "attention_dropout": ("attention_dropout",),
        "classifier_dropout": ("seq_classif_dropout",),
    },
}
_HF_KEYS["electra"] = _HF_KEYS["bert"]


def config_from_hf(hf: Mapping, *, where: str = "config.json") -> BertConfig:
    """``BertConfig`` from an HF ``config.json`` (model_type bert, electra or distilbert)."""
    if not isinstance(hf, Mapping):
        raise ConfigError(f"{where}: expected a JSON object")
    model_type = hf.get("model_type")
    if model_type not in _HF_KEYS:
        raise ConfigError(f"{where}: model_type {model_type!r} is not a BERT-family type "
                          f"(supported: {', '.join(sorted(_HF_KEYS))})")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"{where}: position_embedding_type "
                          f"{hf['position_embedding_type']!r} is not supported (only absolute)")
    if model_type == "distilbert" and hf.get("sinusoidal_pos_embds"):
        raise ConfigError(f"{where}: sinusoidal_pos_embds=true is not supported")
    values: dict[str, Any] = {"model_type": model_type}
    for field, keys in _HF_KEYS[model_type].items():
        for key in keys:
            if hf.get(key) is not None:
                values[field] = hf[key]
                break
    if model_type == "distilbert":
        values |= {"type_vocab_size": 0, "layer_norm_eps": 1e-12}
    required = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")
    missing = [_HF_KEYS[model_type][f][0] for f in required if f not in values]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    try:
        return BertConfig(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


# ------------------------------------------------------------------------------ the name table

# HF parameter (after removing a task prefix) -> zoo path. ``{i}`` is a layer index,
# ``{cls}`` the name the classifier head is stored under. "T" marks a Linear weight, stored
# (out, in) by torch and transposed to NNX's (in, out) kernel.
_L = r"(?P<i>\d+)"
NAME_TABLE: tuple[tuple[str, str], ...] = (
    # embeddings (BERT / ELECTRA / DistilBERT share these names)
    (r"embeddings\.word_embeddings\.weight", "encoder/embeddings/word/embedding"),
    (r"embeddings\.position_embeddings\.weight", "encoder/embeddings/position/embedding"),
    (r"embeddings\.token_type_embeddings\.weight", "encoder/embeddings/token_type/embedding"),
    (r"embeddings\.LayerNorm\.(weight|gamma)", "encoder/embeddings/norm/scale"),
    (r"embeddings\.LayerNorm\.(bias|beta)", "encoder/embeddings/norm/bias"),
    (r"embeddings_project\.weight", "encoder/embeddings/projection/kernel T"),
    (r"embeddings_project\.bias", "encoder/embeddings/projection/bias"),
    # BERT / ELECTRA layers
    (rf"encoder\.layer\.{_L}\.attention\.self\.(?P<p>query|key|value)\.weight",
     "encoder/layers/{i}/attention/{p}/kernel T"),
    (rf"encoder\.layer\.{_L}\.attention\.self\.(?P<p>query|key|value)\.bias",
     "encoder/layers/{i}/attention/{p}/bias"),
    (rf"encoder\.layer\.{_L}\.attention\.output\.dense\.weight",
     "encoder/layers/{i}/attention/output/kernel T"),
    (rf"encoder\.layer\.{_L}\.attention\.output\.dense\.bias",
     "encoder/layers/{i}/attention/output/bias"),
    (rf"encoder\.layer\.{_L}\.attention\.output\.LayerNorm\.(weight|gamma)",
     "encoder/layers/{i}/attention_norm/scale"),
    (rf"encoder\.layer\.{_L}\.attention\.output\.LayerNorm\.(bias|beta)",
     "encoder/layers/{i}/attention_norm/bias"),
    (rf"encoder\.layer\.{_L}\.intermediate\.dense\.weight", "encoder/layers/{i}/intermediate/kernel T"),
    (rf"encoder\.layer\.{_L}\.intermediate\.dense\.bias", "encoder/layers/{i}/intermediate/bias"),
    (rf"encoder\.layer\.{_L}\.output\.dense\.weight", "encoder/layers/{i}/output/kernel T"),
    (rf"encoder\.layer\.{_L}\.output\.dense\.bias", "encoder/layers/{i}/output/bias"),
    (rf"encoder\.layer\.{_L}\.output\.LayerNorm\.(weight|gamma)", "encoder/layers/{i}/output_norm/scale"),
    (rf"encoder\.layer\.{_L}\.output\.LayerNorm\.(bias|beta)", "encoder/layers/{i}/output_norm/bias"),
    # DistilBERT layers
    (rf"transformer\.layer\.{_L}\.attention\.(?P<p>q|k|v|out)_lin\.weight",
     "encoder/layers/{i}/attention/{p}/kernel T"),
    (rf"transformer\.layer\.{_L}\.attention\.(?P<p>q|k|v|out)_lin\.bias",
     "encoder/layers/{i}/attention/{p}/bias"),
    (rf"transformer\.layer\.{_L}\.sa_layer_norm\.weight", "encoder/layers/{i}/attention_norm/scale"),
    (rf"transformer\.layer\.{_L}\.sa_layer_norm\.bias", "encoder/layers/{i}/attention_norm/bias"),
    (rf"transformer\.layer\.{_L}\.ffn\.lin1\.weight", "encoder/layers/{i}/intermediate/kernel T"),
    (rf"transformer\.layer\.{_L}\.ffn\.lin1\.bias", "encoder/layers/{i}/intermediate/bias"),
    (rf"transformer\.layer\.{_L}\.ffn\.lin2\.weight", "encoder/layers/{i}/output/kernel T"),
    (rf"transformer\.layer\.{_L}\.ffn\.lin2\.bias", "encoder/layers/{i}/output/bias"),
    (rf"transformer\.layer\.{_L}\.output_layer_norm\.weight", "encoder/layers/{i}/output_norm/scale"),
    (rf"transformer\.layer\.{_L}\.output_layer_norm\.bias", "encoder/layers/{i}/output_norm/bias"),
    # classification heads: BERT pooler + classifier, DistilBERT pre_classifier + classifier,
    # ELECTRA classifier.dense + classifier.out_proj
    (r"pooler\.dense\.weight", "heads/{cls}/dense/kernel T"),
    (r"pooler\.dense\.bias", "heads/{cls}/dense/bias"),
    (r"pre_classifier\.weight", "heads/{cls}/dense/kernel T"),
    (r"pre_classifier\.bias", "heads/{cls}/dense/bias"),
    (r"classifier\.dense\.weight", "heads/{cls}/dense/kernel T"),
    (r"classifier\.dense\.bias", "heads/{cls}/dense/bias"),
    (r"classifier\.out_proj\.weight", "heads/{cls}/classifier/kernel T"),
    (r"classifier\.out_proj\.bias", "heads/{cls}/classifier/bias"),
    (r"classifier\.weight", "heads/{cls}/classifier/kernel T"),
    (r"classifier\.bias", "heads/{cls}/classifier/bias"),
    # masked-LM heads (the decoder weight is tied to the word embeddings)
    (r"cls\.predictions\.transform\.dense\.weight", "heads/mlm/dense/kernel T"),
    (r"cls\.predictions\.transform\.dense\.bias", "heads/mlm/dense/bias"),
    (r"cls\.predictions\.transform\.LayerNorm\.(weight|gamma)", "heads/mlm/norm/scale"),
    (r"cls\.predictions\.transform\.LayerNorm\.(bias|beta)", "heads/mlm/norm/bias"),
    (r"cls\.predictions\.(decoder\.)?bias", "heads/mlm/decoder/bias"),
    (r"vocab_transform\.weight", "heads/mlm/dense/kernel T"),
    (r"vocab_transform\.bias", "heads/mlm/dense/bias"),
    (r"vocab_layer_norm\.weight", "heads/mlm/norm/scale"),
    (r"vocab_layer_norm\.bias", "heads/mlm/norm/bias"),
    (r"vocab_projector\.bias", "heads/mlm/decoder/bias"),
)
_ATTN_NAMES = {"q": "query", "k": "key", "v": "value", "out": "output"}
# Stored tensors that are not parameters of the zoo's modules, skipped on purpose.
IGNORED = (
    (r"embeddings\.position_ids", "buffer"),
    (r"embeddings\.token_type_ids", "buffer"),
    (r"cls\.predictions\.decoder\.weight", "tied to the word embeddings"),
    (r"vocab_projector\.weight", "tied to the word embeddings"),
    (r"cls\.seq_relationship\.(weight|bias)", "next-sentence head (not used)"),
    (r"discriminator_predictions\..*", "ELECTRA replaced-token head (not used)"),
)
_PREFIXES = ("bert.", "electra.", "distilbert.", "roberta.")  # task models' encoder prefix
_COMPILED = [(re.compile(f"^{p}$"), target) for p, target in NAME_TABLE]
_IGNORED = [(re.compile(f"^{p}$"), why) for p, why in IGNORED]


def _strip_prefix(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def map_names(tensors: Mapping[str, np.ndarray], classifier_head: str
              ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """(zoo params, HF names with no zoo name, notes on what was skipped on purpose).

    The pooler goes to the classifier head only when the checkpoint has a classifier; a
    bare encoder's pooler is skipped (a fresh head gets a fresh pooler) and noted.
    """
    has_classifier = any(_strip_prefix(n).startswith(("classifier.", "pre_classifier."))
                         for n in tensors)
    params, unmapped, notes = {}, [], []
    for raw_name, value in tensors.items():
        name = _strip_prefix(raw_name)
        why = next((why for pattern, why in _IGNORED if pattern.match(name)), None)
        if why is None and name.startswith("pooler.") and not has_classifier:
            why = "pooler of a bare encoder (a new classification head starts fresh)"
        if why is not None:
            notes.append(f"{raw_name}: skipped ({why})")
            continue
        for pattern, target in _COMPILED:
            match = pattern.match(name)
            if match:
                groups = match.groupdict()
                path, _, transpose = target.partition(" ")
                path = path.format(i=groups.get("i"), cls=classifier_head,
                                   p=_ATTN_NAMES.get(groups.get("p"), groups.get("p")))
                array = np.asarray(value)
                if array.dtype.kind == "f" and array.dtype != np.float32:
                    array = array.astype(np.float32)  # half-precision files: float32 params
                if transpose:
                    if array.ndim != 2:
                        unmapped.append(f"{raw_name} {tuple(array.shape)} (expected a matrix)")
                        break
                    array = np.ascontiguousarray(array.T)
                if path in params and np.array_equal(params[path], array):
                    notes.append(f"{raw_name}: skipped (a copy of the tensor for {path})")
                elif path in params:
                    unmapped.append(f"{raw_name} (a second, different tensor for {path})")
                else:
                    params[path] = array
                break
        else:
            unmapped.append(f"{raw_name} {tuple(np.shape(value))}")
    if "heads/mlm/decoder/bias" in params and "encoder/embeddings/word/embedding" in params:
        # Untie the decoder: its kernel is the transposed word embedding table.
        params["heads/mlm/decoder/kernel"] = np.ascontiguousarray(
            params["encoder/embeddings/word/embedding"].T)
    return params, sorted(unmapped), sorted(notes)


# ------------------------------------------------------------------------------ folders


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Tensors of ``model.safetensors`` (preferred) or ``pytorch_model.bin`` in ``path``."""
    safetensors_path = path / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(str(safetensors_path))
        except (SafetensorError, ValueError, OSError) as err:
            raise ConfigError(f"{safetensors_path}: not a valid safetensors file ({err})") from None
    bin_path = path / "pytorch_model.bin"
    if bin_path.is_file():
        from zoo.models.bert.torch_bin import read_torch_bin

        return read_torch_bin(bin_path)
    raise WeightsNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")


def _lowercase(path: Path, source: str) -> bool:
    """Casing per tokenizer_config.json's do_lower_case, else by the repo or folder's own
    name ('...-cased' keeps case), else lowercase as HF's BertTokenizer does."""
    config = path / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case")
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise ConfigError(f"{config}: not a valid JSON object") from None
        if isinstance(value, bool):
            return value
    return not re.search(r"(?<!un)cased", source.lower().rstrip("/").rsplit("/", 1)[-1])


def read_tokenizer(path: Path, source: str = ""):
    """``tokenizer.json`` (padding/truncation baked into it turned off) or a WordPiece
    tokenizer built from ``vocab.txt`` with BERT's normaliser and ``[CLS] … [SEP]``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    json_path = path / "tokenizer.json"
    if json_path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(json_path))
        except Exception as err:  # the tokenizers library raises plain Exceptions
            raise ConfigError(f"{json_path}: not a valid tokenizer.json ({err})") from None
    else:
        vocab_path = path / "vocab.txt"
        if not vocab_path.is_file():
            raise WeightsNotFoundError(f"{path}: no tokenizer.json or vocab.txt")
        try:
            tokens = vocab_path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise ConfigError(f"{vocab_path}: not valid UTF-8 ({err.reason})") from None
        vocab = {}
        for token in tokens:
            vocab.setdefault(token, len(vocab))  # HF keeps the first id of a duplicate
        lowercase = _lowercase(path, source or str(path))
        tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                               max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        for token in ("[CLS]", "[SEP]"):
            if token not in vocab:
                raise ConfigError(f"{vocab_path}: the vocabulary lacks {token}")
        tokenizer.post_processor = processors.BertProcessing(
            ("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def _check_complete(path: Path) -> None:
    """One line naming what a folder lacks to be an HF checkpoint (config, weights)."""
    from zoo.registry import WeightsNotFoundError

    if not path.is_dir():
        raise WeightsNotFoundError(f"{path} is not a folder; expected a HuggingFace checkpoint "
                                   "folder (config.json and model.safetensors or "
                                   "pytorch_model.bin)")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise WeightsNotFoundError(
            f"{path} is not a complete HuggingFace checkpoint: it lacks {' and '.join(missing)} "
            "(copy the whole folder, or pass a hub id owner/name to download it)")


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / name).is_file() for name in WEIGHT_FILES)


def convert_folder(path: str | Path, name: str | None = None,
                   classifier_head: str | None = None) -> Converted:
    """An HF BERT-family folder as ``Converted`` (strict: one report for every problem)."""
    from zoo.checkpoint import check_tree
    from zoo.model import expected_params
    from zoo.registry import get_encoder, list_models

    path = Path(path).expanduser()
    _check_complete(path)
    hf = _read_json(path / "config.json")
    config = config_from_hf(hf, where=str(path / "config.json"))
    model = name or _preset_for(config, hf, list_models())
    spec = get_encoder(model)
    if spec.family is not FAMILY:
        raise ConfigError(f"{path} holds a BERT-family checkpoint, but {model!r} is a "
                          f"{spec.family.name} model")
    if spec.config.model_type != config.model_type:
        raise ConfigError(f"{path / 'config.json'}: model_type {config.model_type!r}, but "
                          f"{model!r} is a {spec.config.model_type} model")
    if spec.source is not None and _shape(spec.config) != _shape(config):
        raise ConfigError(
            f"{path / 'config.json'} describes another architecture than the preset {model!r} "
            f"({_shape_difference(spec.config, config)}); load it as "
            f"{config.model_type}-custom or without a model name")
    source_id = getattr(spec.source, "repo_id", "") or str(hf.get("_name_or_path", ""))
    head_name = classifier_head or getattr(spec.source, "classifier_head", "classifier")

    tensors = read_weights(path)
    params, unmapped, notes = map_names(tensors, head_name)
    heads: dict[str, dict] = {}
    num_classes = None
    if f"heads/{head_name}/classifier/kernel" in params:
        num_classes = int(params[f"heads/{head_name}/classifier/kernel"].shape[1])
        heads[head_name] = {"kind": "classification", "num_classes": num_classes,
                            "labels": _labels(hf, num_classes, head_name)}
    if "heads/mlm/decoder/bias" in params:
        heads["mlm"] = {"kind": "mlm"}

    expected = expected_params(model, {name: meta.get("num_classes") for name, meta
                                       in heads.items()}, config=config)
    check_tree(expected, params, source=f"{path} (as {model})", unmapped=unmapped,
               unmapped_title="HF names with no zoo name")
    tokenizer = read_tokenizer(path, source_id)
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ConfigError(f"{path}: the tokenizer has {tokenizer.get_vocab_size()} tokens but "
                          f"config.json's vocab_size is {config.vocab_size}")
    weights_file = next(n for n in WEIGHT_FILES if (path / n).is_file())
    return Converted(
        model=model, config=config, params=params, heads=heads,
        default_head=head_name if head_name in heads else ("mlm" if heads else None),
        tokenizer=tokenizer,
        source={"kind": "huggingface", "path": str(path), "hub_id": source_id or None,
                "file": weights_file, "sha256": _sha256(path / weights_file),
                "converter_version": CONVERTER_VERSION},
        notes=tuple(notes),
    )


def _labels(hf: Mapping, num_classes: int, head: str) -> list[str]:
    from zoo.registry import get_head

    id2label = hf.get("id2label")
    if isinstance(id2label, Mapping) and len(id2label) == num_classes:
        try:
            labels = [str(id2label.get(str(i), id2label.get(i))).lower()
                      for i in range(num_classes)]
            if "none" not in labels:
                return labels
        except (TypeError, AttributeError):
            pass
    return list(get_head(head).label_names(num_classes))


def _preset_for(config: BertConfig, hf: Mapping, names: list[str]) -> str:
    """The registered preset a foreign folder is loaded as: same hub id, else same shape."""
    from zoo.registry import get_encoder

    ours = [n for n in names if get_encoder(n).family is FAMILY]
    hub_id = str(hf.get("_name_or_path", ""))
    for n in ours:
        if getattr(get_encoder(n).source, "repo_id", None) == hub_id and hub_id:
            return n
    for n in ours:
        if get_encoder(n).source is not None and _shape(get_encoder(n).config) == _shape(config):
            return n
    return {"bert": "bert-custom", "electra": "electra-custom",
            "distilbert": "distilbert-custom"}[config.model_type]


_NOT_SHAPE = ("dropout", "attention_dropout", "classifier_dropout", "max_len")


def _shape(config: BertConfig) -> dict:
    """The fields that decide parameter shapes and numerics (not dropout rates)."""
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_SHAPE}


def _shape_difference(want: BertConfig, got: BertConfig) -> str:
    a, b = _shape(want), _shape(got)
    return ", ".join(f"{k} {b[k]} instead of {a[k]}" for k in a if a[k] != b[k])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_folder(path: Path, name: str | None) -> Converted | None:
    """An HF folder (config.json + weights) as ``Converted``; anything else: None."""
    if not is_hf_folder(path):
        return None
    return convert_folder(path, name)


# ------------------------------------------------------------------------------ the hub


def _manual(repo: str, name: str) -> str:
    return (f"on a machine with network access run `huggingface-cli download {repo} "
            f"{' '.join(SMALL_FILES)} model.safetensors --local-dir DIR` (older repos ship "
            f"pytorch_model.bin instead), copy DIR here, then "
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
        if get("model.safetensors") is None and get("pytorch_model.bin") is None:
            raise WeightsNotFoundError(f"{repo} has neither model.safetensors nor "
                                       "pytorch_model.bin")
    except WeightsNotFoundError:
        raise
    except Exception as err:  # offline, hub down, auth: all end the same way
        raise WeightsNotFoundError(
            f"no local weights for {name or repo!r} and the download from {repo} failed "
            f"({type(err).__name__}: {str(err)[:160]}). To work offline, "
            f"{_manual(repo, name or 'bert-custom')}") from None
    return Path(download_dir)


def fetch(spec, download_dir: Path) -> Converted:
    """A preset's published weights: downloaded once, then converted."""
    return convert_folder(download(spec.source.repo_id, download_dir, spec.name), spec.name)


FAMILY = register_family(Family(
    name="bert", config_from_dict=config_from_dict, fetch=fetch, open_folder=open_folder,
    formats="a HuggingFace folder with config.json and model.safetensors or pytorch_model.bin"))
