"""Hostile and malformed HuggingFace checkpoint folders against ``zoo.load`` (mutation fuzzing).

``python -m benchmarks.malformed_fuzz --seed 0 --n 300 --out /tmp/mf`` (one case again with
``--only 17``; ``--types roberta,modernbert`` to draw from some model types only). The
contract (``zoo/errors.py``): a folder a user can fix is refused with a ``ZooError`` (or one
of ``PATH_ERRORS``) whose message is one line; anything else is a bug in the zoo.

Bases, built once under ``OUT/bases``: the transformers-written golden folders of
``zoo_tests/golden`` (RoBERTa, XLM-RoBERTa, DeBERTa-v2/v3 with ``tokenizer.json`` or
``spm.model``, ModernBERT; every task head), tiny BERT / ELECTRA / DistilBERT folders as
``zoo_tests/bert_reference`` writes them (safetensors and ``pytorch_model.bin``,
``tokenizer.json`` or ``vocab.txt``), all-MiniLM-L6-v2's own folder, and derived ones: a
RoBERTa folder with ``vocab.json`` + ``merges.txt`` instead of ``tokenizer.json``, a sharded
one (``model.safetensors.index.json``), a DeBERTa folder with the ``spm-options`` tokenizer.
Each base is loaded unmutated first (``base`` cases; a base that fails there is dropped).

Case ``i`` draws from ``random.Random(f"{seed}-{i}")``: a model type, one of its bases, and
1-3 mutations (``MUTATIONS``: config.json keys and bytes, the weights' tensors, header and
bytes, tokenizer files, the folder itself), applied to a copy under ``OUT/work/<i>``. A
worker process (restarted after a hang or a death) runs ``zoo.load("<type>-custom",
weights=DIR)`` and then ``predict`` (a model whose head predicts) or ``encode`` (any other)
on two sentences and a 600-word text, ``--timeout`` seconds at most (default 60), its
memory watched (``--max-rss-gb``). Each case is classified:

- ``ok``: loaded and ran (``missed`` instead when a mutation that must be refused, e.g. a
  tensor of the wrong shape, was not: a silently wrong model);
- ``refusal``: a ``ZooError`` / ``PATH_ERRORS`` with a one-line message;
- ``report``: ``CheckpointMismatchError``'s multi-line report (one line a tensor, by design);
- ``crash``: any other exception, a multi-line message, a worker killed or past the memory
  limit (the traceback's last frames are kept);
- ``hang``: past the timeout.

One JSON line per case goes to ``OUT/results.jsonl``, the crash classes (exception and the
zoo frame it came from) to ``OUT/summary.json``; the folders of cases that are not ``ok``
stay under ``OUT/work``. Exit status 1 when any case is a crash, a hang or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "zoo_tests" / "golden"
TEXTS = ["a short sentence", "another one here", " ".join(["word"] * 600)]  # and a long one
MODEL_TYPES = ("bert", "electra", "distilbert", "roberta", "xlm-roberta", "deberta-v2",
               "modernbert")
REFUSE, ANY = "refuse", "any"  # what a mutation expects of the zoo

# ----------------------------------------------------------------------------- bases


def _golden(name: str) -> Callable[[Path], None]:
    def build(dst: Path) -> None:
        shutil.copytree(GOLDEN / name, dst, ignore=shutil.ignore_patterns("expected.npz"))
    return build


def _bert(model_type: str, **options) -> Callable[[Path], None]:
    def build(dst: Path) -> None:
        from zoo_tests import bert_reference as br

        br.write_hf_folder(dst, model_type, seed=7, **options)
    return build


def _bert_vocab(dst: Path) -> None:
    """BERT with vocab.txt, tokenizer_config.json and special_tokens_map.json only."""
    from zoo_tests import bert_reference as br

    br.write_hf_folder(dst, "bert", seed=3, with_classifier=True, tokenizer="none")
    br.write_tokenizer(dst, "vocab", do_lower_case=True)
    (dst / "special_tokens_map.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
         "mask_token": "[MASK]", "unk_token": "[UNK]"}))


def _minilm(dst: Path) -> None:
    from zoo_tests import bert_reference as br

    shutil.copytree(br.minilm_folder(), dst, ignore=shutil.ignore_patterns(
        "README.md", "data_config.json", ".gitattributes"))


def _roberta_bpe(dst: Path) -> None:
    """A RoBERTa classifier whose tokenizer is vocab.json + merges.txt (the slow files)."""
    _golden("roberta-classifier")(dst)
    state = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    model = state["model"]
    (dst / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                    encoding="utf-8")
    (dst / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
         "pad_token": "<pad>", "mask_token": "<mask>", "unk_token": "<unk>"}))
    (dst / "tokenizer.json").unlink()


def _sharded(name: str) -> Callable[[Path], None]:
    """A golden folder with its weights in two shards and model.safetensors.index.json."""
    def build(dst: Path) -> None:
        from safetensors.numpy import load_file, save_file

        _golden(name)(dst)
        tensors = load_file(str(dst / "model.safetensors"))
        names = sorted(tensors)
        halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        for shard, keys in halves.items():
            save_file({k: tensors[k] for k in keys}, str(dst / shard), metadata={"format": "pt"})
        (dst / "model.safetensors").unlink()
        (dst / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 0},
             "weight_map": {k: s for s, keys in halves.items() for k in keys}}))
    return build


def _spm_options(dst: Path) -> None:
    """The DeBERTa spm classifier with the spm-options tokenizer files (added tokens,
    lower case, split by punctuation)."""
    _golden("deberta-v2-v3-classifier-spm")(dst)
    for name in ("spm.model", "added_tokens.json", "tokenizer_config.json"):
        shutil.copyfile(GOLDEN / "spm-options" / name, dst / name)


# name -> (model_type, builder)
BASES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "bert-classifier": ("bert", _bert("bert", with_classifier=True)),
    "bert-base": ("bert", _bert("bert")),
    "bert-mlm-bin": ("bert", _bert("bert", with_mlm=True, fmt="bin")),
    "bert-vocab": ("bert", _bert_vocab),
    "minilm": ("bert", _minilm),
    "electra-classifier": ("electra", _bert("electra", with_classifier=True, num_labels=3)),
    "electra-base": ("electra", _bert("electra")),
    "distilbert-classifier": ("distilbert", _bert("distilbert", with_classifier=True)),
    "distilbert-mlm-untied": ("distilbert", _bert("distilbert", with_mlm="untied")),
    "distilbert-bin": ("distilbert", _bert("distilbert", fmt="bin")),
    **{g: ("roberta", _golden(g)) for g in ("roberta-base", "roberta-classifier", "roberta-mlm",
                                             "roberta-regressor", "roberta-token")},
    "roberta-bpe": ("roberta", _roberta_bpe),
    "roberta-sharded": ("roberta", _sharded("roberta-token")),
    "roberta-xlm-base": ("xlm-roberta", _golden("roberta-xlm-base")),
    "roberta-xlm-mlm-untied": ("xlm-roberta", _golden("roberta-xlm-mlm-untied")),
    **{g: ("deberta-v2", _golden(g)) for g in (
        "deberta-v2-absolute-base", "deberta-v2-v2-base-pairs", "deberta-v2-v3-base",
        "deberta-v2-v3-classifier", "deberta-v2-v3-classifier-spm", "deberta-v2-v3-mlm",
        "deberta-v2-v3-mlm-new-head", "deberta-v2-v3-regressor", "deberta-v2-v3-token")},
    "deberta-spm-options": ("deberta-v2", _spm_options),
    **{g: ("modernbert", _golden(g)) for g in ("modernbert-base", "modernbert-classifier",
                                                "modernbert-mlm", "modernbert-regressor",
                                                "modernbert-token")},
}

# ----------------------------------------------------------------------------- file helpers


def _read_config(folder: Path) -> dict | None:
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except Exception:
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1, allow_nan=True), encoding="utf-8")


def _st_parts(path: Path) -> tuple[dict, bytes] | None:
    """(header, data) of a safetensors file, None when it is not one."""
    try:
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        return (header, raw[8 + n:]) if isinstance(header, dict) else None
    except Exception:
        return None


def _st_write(path: Path, header, data: bytes, text: bytes | None = None) -> None:
    text = json.dumps(header).encode() if text is None else text
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _weights(folder: Path) -> Path | None:
    """The folder's first safetensors file (the plain one or a shard)."""
    if (folder / "model.safetensors").is_file():
        return folder / "model.safetensors"
    shards = sorted(folder.glob("model-*.safetensors"))
    return shards[0] if shards else None


def _tensors(folder: Path):
    """(file, {name: array}) of the folder's safetensors weights, or None."""
    from safetensors.numpy import load_file

    path = _weights(folder)
    if path is None:
        return None
    try:
        return path, load_file(str(path))
    except Exception:
        return None


def _save(path: Path, tensors) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata={"format": "pt"})


def _is_buffer(name: str) -> bool:
    return name.endswith(("position_ids", "token_type_ids"))


# ----------------------------------------------------------------------------- mutations
# Each takes (rng, folder, ctx) and returns (description, expectation), or None when it
# does not apply to the folder as it is now; a config.json edit that must be refused names
# its key third (a later mutation may put the base's value back). ``ctx["target"]`` may
# replace the path loaded; ``ctx`` also holds the model type and the base's config.json.

# The config.json keys the families read (the others are transformers' bookkeeping).
READ_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "pad_token_id",
    "model_type", "architectures", "id2label", "label2id", "num_labels", "problem_type",
    "embedding_size", "position_embedding_type", "is_decoder", "add_cross_attention",
    "tie_word_embeddings", "_name_or_path",
    "dim", "n_layers", "n_heads", "hidden_dim", "activation", "dropout", "attention_dropout",
    "seq_classif_dropout", "sinusoidal_pos_embds",
    "relative_attention", "max_relative_positions", "position_buckets", "pos_att_type",
    "share_att_key", "position_biased_input", "norm_rel_ebd", "conv_kernel_size",
    "pooler_hidden_size", "pooler_hidden_act", "attention_head_size", "cls_dropout", "legacy",
    "norm_eps", "hidden_activation", "classifier_activation", "classifier_pooling",
    "layer_types", "global_attn_every_n_layers", "rope_parameters", "global_rope_theta",
    "local_rope_theta", "local_attention", "head_dim", "rope_scaling", "norm_bias",
    "attention_bias", "mlp_bias", "classifier_bias", "decoder_bias", "embedding_dropout",
    "mlp_dropout", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id",
)
# Keys whose change alters the parameters' shapes: the weights cannot fit any more.
_SIZES = ("vocab_size", "hidden_size", "intermediate_size")
SHAPE_KEYS = {"bert": _SIZES + ("embedding_size",), "electra": _SIZES + ("embedding_size",),
              "distilbert": ("vocab_size", "dim", "hidden_dim"), "roberta": _SIZES,
              "xlm-roberta": _SIZES, "deberta-v2": _SIZES + ("embedding_size",),
              "modernbert": _SIZES}
# Strings with a line break or a lone surrogate (JSON's "\ud800" reads as one) test that
# messages stay one line and that Rust libraries are not handed what they cannot encode.
ODD_STRINGS = ["gelu\nnew", "\ud800", "x" * 100_000, "\x00", "bert\r"]
ODD_VALUES = [None, "abc", "", "12", 2.5, -1, -7, 0, 1, 3, 10**12, 1e12, 2**31 - 1, 1024,
              True, False, [1, 2], [], {"a": 1}, {}, 2**63, 1e308, -0.0, "gelu", 10**30,
              *ODD_STRINGS]


def _config_edit(edit):
    """A mutation of config.json's value (a dict); ``edit`` returns (description,
    expectation) or None."""
    def mutate(rng, folder, ctx):
        config = _read_config(folder)
        if config is None:
            return None
        done = edit(rng, config, ctx)
        if done is None:
            return None
        _write_json(folder / "config.json", config)
        return done
    mutate.__name__ = edit.__name__
    return mutate


def _key(rng, config, keys=READ_KEYS) -> str | None:
    present = [k for k in keys if k in config]
    return rng.choice(present) if present else None


@_config_edit
def config_delete_key(rng, config, ctx):
    key = _key(rng, config) if rng.random() < 0.85 else rng.choice(sorted(config) or ["x"])
    if key is None or key not in config:
        return None
    del config[key]
    return f"config.json: {key} deleted", ANY


@_config_edit
def config_odd_value(rng, config, ctx):
    key = _key(rng, config) if rng.random() < 0.9 else rng.choice(READ_KEYS)
    if key is None:
        return None
    value = rng.choice(ODD_VALUES)
    if config.get(key) == value and type(config.get(key)) is type(value):
        return None
    config[key] = value
    shape_change = key in SHAPE_KEYS[ctx["model_type"]] and isinstance(value, int) \
        and not isinstance(value, bool)
    return (f"config.json: {key} = {value!r}", REFUSE, key) if shape_change else \
        (f"config.json: {key} = {value!r}", ANY)


@_config_edit
def config_indivisible_heads(rng, config, ctx):
    hidden = "dim" if "dim" in config else "hidden_size"
    heads = "n_heads" if "n_heads" in config else "num_attention_heads"
    if not isinstance(config.get(hidden), int):
        return None
    config[heads] = rng.choice([config[hidden] + 1, 3, 5, 7, config[hidden] * 2])
    if config[hidden] % config[heads] == 0:
        return None
    return f"config.json: {heads} = {config[heads]} does not divide {hidden}", REFUSE


@_config_edit
def config_layers(rng, config, ctx):
    key = "n_layers" if "n_layers" in config else "num_hidden_layers"
    n = config.get(key)
    if not isinstance(n, int):
        return None
    config[key] = rng.choice([0, n - 1, n + 1, n + 5, -1, 1025, 10**12])
    if config[key] == n:
        return None
    return f"config.json: {key} {n} -> {config[key]}", REFUSE, key


@_config_edit
def config_vocab(rng, config, ctx):
    n = config.get("vocab_size")
    if not isinstance(n, int):
        return None
    config["vocab_size"] = rng.choice([n - 1, n + 5, 1, 2 * n, 0])
    return f"config.json: vocab_size {n} -> {config['vocab_size']}", REFUSE, "vocab_size"


@_config_edit
def config_zero_sizes(rng, config, ctx):
    key = rng.choice(["intermediate_size", "hidden_dim", "type_vocab_size",
                      "max_position_embeddings", "num_attention_heads", "n_heads",
                      "local_attention", "embedding_size"])
    if key not in config and key not in ("type_vocab_size", "embedding_size"):
        return None
    old = config.get(key)
    config[key] = 0
    return f"config.json: {key} {old!r} -> 0", ANY


@_config_edit
def config_labels(rng, config, ctx):
    labels = config.get("id2label")
    n = len(labels) if isinstance(labels, dict) else 2
    choice = rng.randrange(10)
    if choice == 0:
        config["id2label"] = {str(i): f"L{i}" for i in range(n + 1)}
        what = "one label too many"
    elif choice == 1:
        config["id2label"] = {f"label{i}": f"L{i}" for i in range(n)}
        what = "non-integer keys"
    elif choice == 2:
        config["id2label"] = {}
        what = "empty"
    elif choice == 3:
        config["id2label"] = {str(i * 5): f"L{i}" for i in range(n)}
        what = "gaps in the ids"
    elif choice == 4:
        config["id2label"] = {str(i): rng.choice([None, 3, ["x"], {"a": 1}, "", *ODD_STRINGS])
                              for i in range(n)}
        what = "labels that are not strings"
    elif choice == 5:
        config["label2id"] = {f"other{i}": i + 7 for i in range(n)}
        what = "label2id disagreeing with id2label"
    elif choice == 6:
        config["label2id"] = rng.choice(["x", [1], {"a": "b"}, 5])
        what = "label2id malformed"
    elif choice == 7:
        config["num_labels"] = rng.choice([0, -1, n + 1, "2", 2.0, 10**9, True])
        what = f"num_labels {config['num_labels']!r}"
    elif choice == 8:
        config["id2label"] = {"-1": "neg", "0": "zero"} if n == 2 else {str(-i): f"L{i}"
                                                                         for i in range(n)}
        what = "negative ids"
    else:
        config["id2label"] = {"0" * 400 + "1": "a", "0": "b"}
        what = "an id of 400 digits"
    return f"config.json: id2label/label2id {what}", ANY


@_config_edit
def config_architectures(rng, config, ctx):
    prefixes = ["Bert", "Electra", "DistilBert", "Roberta", "XLMRoberta", "DebertaV2",
                "ModernBert"]
    value = rng.choice([
        ["FooBarModel"], [], "RobertaModel", [123], None, [None],
        [rng.choice(prefixes) + rng.choice(["ForSequenceClassification",
                                            "ForTokenClassification", "ForMaskedLM", "Model",
                                            "ForQuestionAnswering", "ForPreTraining",
                                            "ForMultipleChoice", "ForCausalLM"])],
        ["BertModel", "BertForMaskedLM"], {"a": 1}, [["BertModel"]],
        ["Some\nForQuestionAnswering"], ["\ud800ForTokenClassification"]])
    config["architectures"] = value
    return f"config.json: architectures = {value!r}", ANY


@_config_edit
def config_model_type(rng, config, ctx):
    old = config.get("model_type")
    new = rng.choice([t for t in MODEL_TYPES if t != old] + ["gpt2", "", None, 5,
                                                              ["bert"], "BERT", *ODD_STRINGS])
    config["model_type"] = new
    return f"config.json: model_type {old!r} -> {new!r}", REFUSE


@_config_edit
def config_positions(rng, config, ctx):
    n = config.get("max_position_embeddings")
    config["max_position_embeddings"] = rng.choice([1, 2, 3, 8, 2**31 - 1, 10**6, -5])
    return f"config.json: max_position_embeddings {n!r} -> " \
           f"{config['max_position_embeddings']!r}", ANY


@_config_edit
def config_pad_token(rng, config, ctx):
    vocab = config.get("vocab_size") if isinstance(config.get("vocab_size"), int) else 100
    key = rng.choice(["pad_token_id", "pad_token_id", "bos_token_id", "eos_token_id",
                      "cls_token_id", "sep_token_id"])
    config[key] = rng.choice([-1, vocab, vocab + 100, 10**12, None, "1", 1.5, 0])
    return f"config.json: {key} = {config[key]!r}", ANY


@_config_edit
def config_type_vocab(rng, config, ctx):
    config["type_vocab_size"] = rng.choice([0, 1, 3, -1, 2**31 - 1])
    return f"config.json: type_vocab_size = {config['type_vocab_size']!r}", ANY


@_config_edit
def config_modernbert(rng, config, ctx):
    if config.get("model_type") != "modernbert":
        return None
    n = config.get("num_hidden_layers")
    n = n if isinstance(n, int) and 0 <= n < 100 else 2
    choice = rng.randrange(9)
    if choice == 0:
        config["layer_types"] = ["full_attention"] * rng.choice([0, n - 1, n + 1, 1000])
        what = f"layer_types of length {len(config['layer_types'])}"
    elif choice == 1:
        config["layer_types"] = rng.choice([["global"] * n, "full_attention", [1] * n, {},
                                            [None] * n])
        what = f"layer_types {config['layer_types']!r}"
    elif choice == 2:
        config["global_attn_every_n_layers"] = rng.choice([0, -1, 2.5, "3", None, 10**12, True])
        config.pop("layer_types", None)
        what = f"global_attn_every_n_layers {config['global_attn_every_n_layers']!r}"
    elif choice == 3:
        key = rng.choice(["global_rope_theta", "local_rope_theta"])
        config[key] = rng.choice([0, -1.0, 1e308, "10000", None, [1], True, 1e-300])
        what = f"{key} {config[key]!r}"
    elif choice == 4:
        config["rope_parameters"] = rng.choice([
            {"rope_theta": 0}, {"rope_theta": "x"}, {"rope_type": "yarn", "factor": 2.0},
            {"full_attention": {"rope_theta": -1.0}}, {"full_attention": "x"}, [1, 2],
            "default", {"full_attention": {"rope_type": "default", "rope_theta": None}},
            {"sliding_attention": {"rope_theta": 1e400}}, {"unknown_kind": {}},
            {"full_attention": {"rope_type": None}}, {"rope_theta": [10000.0]}])
        what = f"rope_parameters {config['rope_parameters']!r}"
    elif choice == 5:
        config["local_attention"] = rng.choice([0, 1, 3, -2, 2**31 - 1, 10**12, 4.0, "128"])
        what = f"local_attention {config['local_attention']!r}"
    elif choice == 6:
        config["head_dim"] = rng.choice(["16", 7, 0, -16, None, 10**12, [16], {}, 16.0])
        if rng.random() < 0.3:
            config["num_attention_heads"] = 10**12
        what = f"head_dim {config['head_dim']!r}, {config['num_attention_heads']} heads"
    elif choice == 7:
        config["rope_scaling"] = rng.choice([{"type": "linear", "factor": 2.0}, "x", {}, 0])
        what = f"rope_scaling {config['rope_scaling']!r}"
    else:
        key = rng.choice(["classifier_pooling", "hidden_activation", "classifier_activation"])
        config[key] = rng.choice(["max", "", None, 5, ["cls"], "GELU", "swish"])
        what = f"{key} {config[key]!r}"
    return f"config.json: {what}", ANY


@_config_edit
def config_deberta(rng, config, ctx):
    if config.get("model_type") != "deberta-v2":
        return None
    key = rng.choice(["position_buckets", "max_relative_positions", "pos_att_type",
                      "norm_rel_ebd", "relative_attention", "share_att_key",
                      "position_biased_input", "conv_kernel_size", "attention_head_size",
                      "pooler_hidden_size", "legacy", "pooler_hidden_act"])
    value = rng.choice([0, 1, -1, 2, 3, 2**31 - 1, 10**12, "c2p|p2c|bogus", ["c2p", "c2p"],
                        "none", None, True, "layer_norm|", 2.5, "8", [], {}])
    config[key] = value
    if rng.random() < 0.2:
        config["num_attention_heads"] = 10**12
        key += " (and num_attention_heads 10**12)"
    return f"config.json: {key} = {value!r}", ANY


@_config_edit
def config_bert(rng, config, ctx):
    if config.get("model_type") not in ("bert", "electra", "distilbert"):
        return None
    key = rng.choice(["embedding_size", "sinusoidal_pos_embds", "position_embedding_type",
                      "activation", "hidden_act", "seq_classif_dropout", "dim", "n_heads"])
    value = rng.choice([0, 8, 16, -1, 10**12, "relative_key", True, "gelu", "nope", None,
                        1.5, [8]])
    config[key] = value
    return f"config.json: {key} = {value!r}", ANY


def _config_text(edit):
    """A mutation of config.json's bytes."""
    def mutate(rng, folder, ctx):
        path = folder / "config.json"
        if not path.is_file():
            return None
        raw = path.read_bytes()
        done = edit(rng, raw)
        if done is None:
            return None
        data, what, expect = done
        path.write_bytes(data)
        return f"config.json: {what}", expect
    mutate.__name__ = edit.__name__
    return mutate


@_config_text
def config_truncated(rng, raw):
    return raw[: rng.randrange(0, max(1, len(raw) - 1))], "truncated", REFUSE


@_config_text
def config_json_list(rng, raw):
    try:
        value = json.loads(raw)
    except Exception:
        return None
    return json.dumps(rng.choice([[value], [], "text", 5, None])).encode(), \
        "valid JSON, not an object", REFUSE


@_config_text
def config_bom(rng, raw):
    return b"\xef\xbb\xbf" + raw, "a UTF-8 byte-order mark", ANY


@_config_text
def config_not_utf8(rng, raw):
    at = rng.randrange(len(raw)) if raw else 0
    return raw[:at] + rng.choice([b"\xff\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80"]) + raw[at:], \
        "bytes that are not UTF-8", REFUSE


@_config_text
def config_utf16(rng, raw):
    try:
        return raw.decode("utf-8").encode("utf-16"), "UTF-16", ANY
    except UnicodeDecodeError:
        return None


@_config_text
def config_duplicate_key(rng, raw):
    text = raw.decode("utf-8", "replace").lstrip()
    if not text.startswith("{"):
        return None
    key = rng.choice(["hidden_size", "model_type", "num_hidden_layers", "vocab_size",
                      "architectures"])
    value = rng.choice(['17', '"bert"', '"gpt2"', '1', 'null', '[]'])
    # json keeps the last duplicate: put the odd value last
    body = text.rstrip().rstrip("}").rstrip()
    sep = "," if body.rstrip() != "{" else ""
    return (f'{body}{sep} "{key}": {value}}}').encode(), f"duplicate key {key} = {value}", ANY


@_config_text
def config_nan_literal(rng, raw):
    try:
        value = json.loads(raw)
    except Exception:
        return None
    if not isinstance(value, dict):
        return None
    key = _key(rng, value) or "hidden_size"
    literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
    value[key] = "@@LIT@@"
    return json.dumps(value).replace('"@@LIT@@"', literal).encode(), f"{key} = {literal}", ANY


@_config_text
def config_deep(rng, raw):
    try:
        value = json.loads(raw)
    except Exception:
        return None
    if not isinstance(value, dict):
        return None
    key = _key(rng, value) or "id2label"
    depth = rng.choice([50, 5000, 200_000])
    value[key] = "@@DEEP@@"
    return json.dumps(value).replace('"@@DEEP@@"', "[" * depth + "]" * depth).encode(), \
        f"{key} nested {depth} deep", ANY


@_config_text
def config_empty(rng, raw):
    return rng.choice([b"", b"   ", b"\x00" * 16]), "empty", REFUSE


@_config_text
def config_huge_int(rng, raw):
    try:
        value = json.loads(raw)
    except Exception:
        return None
    if not isinstance(value, dict):
        return None
    key = _key(rng, value) or "hidden_size"
    value[key] = "@@BIG@@"
    return json.dumps(value).replace('"@@BIG@@"', "9" * 5000).encode(), \
        f"{key} an integer of 5000 digits", ANY


# -- weights


def _tensor_edit(edit):
    """A mutation of the tensors of the folder's (first) safetensors file."""
    def mutate(rng, folder, ctx):
        found = _tensors(folder)
        if found is None:
            return None
        path, tensors = found
        done = edit(rng, tensors, ctx)
        if done is None:
            return None
        _save(path, tensors)
        return f"{path.name}: {done[0]}", done[1]
    mutate.__name__ = edit.__name__
    return mutate


def _pick(rng, tensors, matrix=False, params=True):
    names = [n for n in sorted(tensors) if (not params or not _is_buffer(n))
             and (not matrix or tensors[n].ndim == 2)]
    return rng.choice(names) if names else None


@_tensor_edit
def weights_missing_tensor(rng, tensors, ctx):
    name = _pick(rng, tensors)
    if name is None:
        return None
    del tensors[name]
    # a pooler of a bare BERT model is not needed (skipped with a note)
    expect = ANY if "pooler" in name else REFUSE
    return f"tensor {name} removed", expect


@_tensor_edit
def weights_extra_tensor(rng, tensors, ctx):
    import numpy as np

    name = rng.choice(["foo.bar", "encoder.layer.99.output.dense.weight",
                       "embeddings.word_embeddings.weight.extra", "classifier.weight",
                       "cls.predictions.decoder.weight", "model.layers.7.attn.Wo.weight",
                       "lm_head.decoder.weight", "pooler.dense.weight"])
    if name in tensors:
        return None
    tensors[name] = np.ones((4, 4), np.float32)
    return f"extra tensor {name} (4, 4)", ANY


@_tensor_edit
def weights_wrong_shape(rng, tensors, ctx):
    import numpy as np

    name = _pick(rng, tensors)
    if name is None:
        return None
    a = tensors[name]
    choice = rng.randrange(5)
    if choice == 0 and a.ndim == 2 and a.shape[0] != a.shape[1]:
        b, what = np.ascontiguousarray(a.T), "transposed"
    elif choice == 1:
        b, what = np.concatenate([a, a[:1]]) if a.ndim else a.reshape(1), "one more row"
    elif choice == 2:
        b, what = a.reshape(-1), "flattened"
    elif choice == 3:
        b, what = np.zeros((0,) + a.shape[1:], a.dtype), "zero rows"
    else:
        b, what = a.reshape(a.shape + (1,)), "an extra axis"
    if b.shape == a.shape:
        return None
    tensors[name] = b
    return f"{name} {a.shape} -> {b.shape} ({what})", REFUSE


@_tensor_edit
def weights_wrong_dtype(rng, tensors, ctx):
    name = _pick(rng, tensors)
    if name is None:
        return None
    dtype = rng.choice(["int32", "float64", "bool", "float16", "int8", "uint8", "int64"])
    tensors[name] = tensors[name].astype(dtype)
    # transformers copies any dtype into a float parameter (torch's copy_ converts)
    return f"{name} as {dtype}", ANY


@_tensor_edit
def weights_non_finite(rng, tensors, ctx):
    import numpy as np

    name = _pick(rng, tensors)
    if name is None or tensors[name].dtype.kind != "f" or not tensors[name].size:
        return None
    value = rng.choice([np.nan, np.inf, -np.inf])
    a = tensors[name].copy()
    a.reshape(-1)[rng.randrange(a.size)] = value
    tensors[name] = a
    return f"{name}: one {value} (transformers loads it)", ANY


def _weights_bytes(edit):
    """A mutation of the bytes of the folder's (first) weight file."""
    def mutate(rng, folder, ctx):
        path = _weights(folder)
        if path is None or path.is_symlink():
            path = folder / "pytorch_model.bin"
            if not path.is_file() or path.is_symlink():
                return None
        done = edit(rng, path)
        if done is None:
            return None
        return f"{path.name}: {done[0]}", done[1]
    mutate.__name__ = edit.__name__
    return mutate


@_weights_bytes
def weights_truncated(rng, path):
    raw = path.read_bytes()
    cut = rng.choice([rng.randrange(len(raw)), len(raw) - 1, 4, 8, 9])
    path.write_bytes(raw[:cut])
    return f"truncated to {cut} of {len(raw)} bytes", REFUSE


@_weights_bytes
def weights_zero_length(rng, path):
    path.write_bytes(b"")
    return "zero bytes", REFUSE


@_weights_bytes
def weights_garbage(rng, path):
    raw = bytearray(path.read_bytes())
    for _ in range(rng.choice([1, 10, 1000])):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    path.write_bytes(bytes(raw))
    return "random bytes overwritten", ANY


@_weights_bytes
def weights_header_garbage(rng, path):
    parts = _st_parts(path)
    if parts is None:
        return None
    header, data = parts
    text = json.dumps(header).encode()
    junk = rng.choice([b"{" + b"x" * (len(text) - 2) + b"}", b"\xff" * len(text),
                       b"[" * len(text), text[: len(text) // 2] + b" " * (len(text) // 2 + 1),
                       b'{"__metadata__": 5' + b" " * max(0, len(text) - 19) + b"}"])
    _st_write(path, None, data, junk[: max(len(junk), 1)])
    return "header replaced by garbage", REFUSE


@_weights_bytes
def weights_header_entries(rng, path):
    parts = _st_parts(path)
    if parts is None:
        return None
    header, data = parts
    names = [n for n in header if n != "__metadata__"]
    if len(names) < 2:
        return None
    a, b = rng.sample(names, 2)
    choice = rng.randrange(11)
    if choice == 0:
        header[a]["data_offsets"] = list(header[b]["data_offsets"])
        what = f"{a} given {b}'s offsets"
    elif choice == 1:
        header[a]["data_offsets"], header[b]["data_offsets"] = \
            header[b]["data_offsets"], header[a]["data_offsets"]
        what = f"offsets of {a} and {b} swapped"
        ends = [header[n]["data_offsets"] for n in (a, b)]
        if ends[0][1] - ends[0][0] == ends[1][1] - ends[1][0]:  # a valid file, other values
            _st_write(path, header, data)
            return what, ANY
    elif choice == 2:
        begin, end = header[a]["data_offsets"]
        header[a]["data_offsets"] = [begin + len(data), end + len(data)]
        what = f"{a} past the end"
    elif choice == 3:
        header[a]["data_offsets"] = [header[a]["data_offsets"][1], header[a]["data_offsets"][0]]
        what = f"{a} begin > end"
    elif choice == 4:
        header[a]["shape"] = rng.choice([[2**40, 2**40], [-1], [1.5], "3", None, [2**64]])
        what = f"{a} shape {header[a]['shape']!r}"
    elif choice == 5:
        header[a]["dtype"] = rng.choice(["C64", "F8_E4M3", "U16", "f32", None, 7, "BOOL",
                                         "BF16", "F16", "I64", "U64"])
        what = f"{a} dtype {header[a]['dtype']!r}"
    elif choice == 6:
        header[a] = rng.choice([None, [], "x", {"dtype": "F32"}])
        what = f"{a} entry {header[a]!r}"
    elif choice == 7:
        header["__metadata__"] = rng.choice([None, 5, {"format": 5}, [], {"a": {"b": 1}}])
        what = f"__metadata__ {header['__metadata__']!r}"
    elif choice == 8:
        header[a]["data_offsets"] = [0, 2**64 + 4]
        what = f"{a} offsets past 2**64"
    elif choice == 9:
        header[a]["data_offsets"] = [-4, header[a]["data_offsets"][1]]
        what = f"{a} negative begin"
    else:
        header[a]["extra"] = 1
        what = f"{a} an extra field"
    _st_write(path, header, data)
    return what, REFUSE if choice not in (7, 5) else ANY


@_weights_bytes
def weights_header_length(rng, path):
    raw = path.read_bytes()
    if len(raw) < 8:
        return None
    n = rng.choice([2**64 - 1, 2**63, 1 << 40, 100 << 20, 0, 1, len(raw) - 8, len(raw)])
    path.write_bytes(struct.pack("<Q", n) + raw[8:])
    return f"header length field {n}", REFUSE


@_weights_bytes
def weights_duplicate_names(rng, path):
    parts = _st_parts(path)
    if parts is None:
        return None
    header, data = parts
    names = [n for n in header if n != "__metadata__"]
    if len(names) < 2:
        return None
    a, b = rng.sample(names, 2)
    text = json.dumps(header)
    entry_b = json.dumps({a: header[b]})[1:-1]
    text = text[:-1] + ", " + entry_b + "}"  # a second entry named a (json keeps the last)
    _st_write(path, None, data, text.encode())
    return f"{a} named twice in the header", ANY


@_weights_bytes
def weights_header_padding(rng, path):
    """Trailing spaces in the header, as safetensors pads it to 8 bytes (valid)."""
    parts = _st_parts(path)
    if parts is None:
        return None
    header, data = parts
    _st_write(path, None, data, json.dumps(header).encode() + b" " * rng.choice([1, 7, 1000]))
    return "header padded with spaces", ANY


def weights_replaced(rng, folder, ctx):
    """model.safetensors as a folder, a symlink to /dev/zero, to itself, to a missing file."""
    path = _weights(folder)
    if path is None:
        return None
    kind = rng.choice(["directory", "dev-zero", "self-link", "dangling", "fifo", "dev-null"])
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "dev-null":
        path.symlink_to("/dev/null")
    elif kind == "self-link":
        path.symlink_to(path.name)
    elif kind == "dangling":
        path.symlink_to("no-such-file")
    else:
        os.mkfifo(path)
    return f"{path.name} replaced by {kind}", REFUSE


def weights_to_bin(rng, folder, ctx):
    """The safetensors weights as pytorch_model.bin (alone, or beside a disagreeing
    model.safetensors)."""
    import numpy as np

    from zoo_tests.torch_format import write_torch_bin

    found = _tensors(folder)
    if found is None or found[0].name != "model.safetensors":
        return None
    path, tensors = found
    both = rng.random() < 0.5
    if both:  # the .bin disagrees (safetensors is preferred, as by transformers)
        tensors = {k: (v * 2 if v.dtype.kind == "f" else v) for k, v in tensors.items()}
        if rng.random() < 0.5 and tensors:
            tensors.pop(sorted(tensors)[0])
    write_torch_bin(folder / "pytorch_model.bin",
                    {k: np.ascontiguousarray(v) for k, v in tensors.items()})
    if not both:
        path.unlink()
    return ("pytorch_model.bin beside a disagreeing model.safetensors" if both
            else "weights as pytorch_model.bin only"), ANY


def weights_bin_hostile(rng, folder, ctx):
    """A pytorch_model.bin that is not a torch zip, or has odd members."""
    import zipfile

    path = folder / "pytorch_model.bin"
    if not path.is_file():
        return None
    kind = rng.choice(["not-zip", "empty-zip", "pickle", "no-data-pkl", "text"])
    if kind == "not-zip":
        path.write_bytes(os.urandom(256))
    elif kind == "empty-zip":
        with zipfile.ZipFile(path, "w"):
            pass
    elif kind == "pickle":
        import pickle

        path.write_bytes(pickle.dumps({"a": [1, 2, 3]}))
    elif kind == "no-data-pkl":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/version", "3\n")
    else:
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    # model.safetensors, when there, is read instead (as by transformers)
    return f"pytorch_model.bin: {kind}", ANY if _weights(folder) else REFUSE


def weights_index(rng, folder, ctx):
    """A shard index that is malformed or disagrees with its shards."""
    path = folder / "model.safetensors.index.json"
    if not path.is_file():
        if (folder / "model.safetensors").is_file() and rng.random() < 0.5:
            # an index beside the plain file, naming a missing shard (the plain file wins)
            _write_json(path, {"weight_map": {"x": "missing.safetensors"}})
            return "an index beside model.safetensors", ANY
        return None
    try:
        index = json.loads(path.read_text())
        weight_map = index["weight_map"]
    except Exception:
        return None
    names = sorted(weight_map)
    choice = rng.randrange(7)
    if choice == 0:
        weight_map[rng.choice(names)] = "../model.safetensors"
    elif choice == 1:
        del weight_map[rng.choice(names)]
    elif choice == 2:
        weight_map["extra.weight"] = weight_map[names[0]]
    elif choice == 3:
        index["weight_map"] = rng.choice([[], {}, "x", None])
    elif choice == 4:
        weight_map[rng.choice(names)] = rng.choice([None, 5, "", "/etc/passwd", "."])
    elif choice == 5:
        weight_map[names[0]] = "model-00003-of-00002.safetensors"
    else:
        a, b = rng.sample(names, 2)
        weight_map[a], weight_map[b] = weight_map[b], weight_map[a]
    _write_json(path, index)
    valid = choice == 6 and weight_map.get(a) == weight_map.get(b)
    plain = (folder / "model.safetensors").is_file()  # read instead of the index
    return f"model.safetensors.index.json: edit {choice}", ANY if valid or plain else REFUSE


# -- tokenizers


def _json_file_edit(name: str, edit):
    def mutate(rng, folder, ctx):
        path = folder / name
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except Exception:
            return None
        done = edit(rng, value, ctx)
        if done is None:
            return None
        new, what, expect = done
        _write_json(path, new)
        return f"{name}: {what}", expect
    mutate.__name__ = f"{name.split('.')[0]}_{edit.__name__}"
    return mutate


def _tokenizer_json(rng, state, ctx):
    if not isinstance(state, dict):
        return None
    model = state.get("model") if isinstance(state.get("model"), dict) else {}
    choice = rng.randrange(12)
    if choice == 0:
        model["type"] = rng.choice(["Foo", None, 5, "WordLevel", "BPE", "Unigram", "WordPiece"])
        what = f"model type {model['type']!r}"
    elif choice == 1:  # a special token removed from the vocabulary and the added tokens
        added = state.get("added_tokens") or []
        if not added:
            return None
        token = rng.choice(added)
        state["added_tokens"] = [a for a in added if a is not token]
        vocab = model.get("vocab")
        if isinstance(vocab, dict):
            vocab.pop(token.get("content"), None)
        what = f"special token {token.get('content')!r} removed"
    elif choice == 2:
        added = state.get("added_tokens") or []
        if not added:
            return None
        token = rng.choice(added)
        token["id"] = rng.choice([10**6, -1, 2**40, None, "3", 0])
        what = f"added token {token.get('content')!r} id {token['id']!r}"
    elif choice == 3:
        state["added_tokens"] = (state.get("added_tokens") or []) + [
            {"id": rng.choice([5, 10**5, 2**31]), "content": "<new>", "single_word": False,
             "lstrip": False, "rstrip": False, "normalized": False, "special": True}]
        what = f"an added token <new> with id {state['added_tokens'][-1]['id']}"
    elif choice == 4:
        state["post_processor"] = rng.choice([None, {"type": "Nope"}, {"type": "BertProcessing",
                                              "cls": ["[X]", 5], "sep": ["[Y]", 6]}, 5])
        what = f"post_processor {state['post_processor']!r}"
    elif choice == 5:
        state["normalizer"] = rng.choice([{"type": "Precompiled",
                                           "precompiled_charsmap": "AAAA"},
                                          {"type": "Lowercase"}, {"type": "Bogus"},
                                          {"type": "Precompiled", "precompiled_charsmap": None}])
        what = f"normalizer {state['normalizer']!r}"
    elif choice == 6:
        if "vocab" not in model:
            return None
        vocab = model["vocab"]
        model["vocab"] = rng.choice([{}, [], None, "x"])
        what = f"vocab {model['vocab']!r} (was {type(vocab).__name__})"
    elif choice == 7:
        state["truncation"] = {"max_length": 2, "strategy": "LongestFirst", "stride": 0,
                               "direction": "Right"}
        state["padding"] = {"strategy": {"Fixed": 3}, "direction": "Right", "pad_to_multiple_of":
                            None, "pad_id": 10**6, "pad_type_id": 0, "pad_token": "<nope>"}
        what = "truncation to 2 and padding baked in"
    elif choice == 8:
        vocab = model.get("vocab")
        if not isinstance(vocab, dict) or not vocab:
            return None
        token = rng.choice(sorted(vocab))
        vocab[token] = rng.choice([-1, 10**9, 0])
        what = f"vocab {token!r} id {vocab[token]}"
    elif choice == 9:
        pp = state.get("post_processor")
        if not isinstance(pp, dict):
            return None
        if pp.get("type") == "TemplateProcessing" and pp.get("special_tokens"):
            entry = next(iter(pp["special_tokens"].values()))
            entry["ids"] = rng.choice([[-1], [], [1, 2], ["x"], [10**20]])
            what = f"post_processor special token ids {entry['ids']!r}"
        elif isinstance(pp.get("cls"), list):
            pp["cls"][1] = rng.choice([-1, 10**6, "x", None])
            what = f"post_processor cls id {pp['cls'][1]!r}"
        else:
            return None
    elif choice == 10:
        state["version"] = rng.choice(["2.0", None, 5])
        what = f"version {state['version']!r}"
    else:
        state["pre_tokenizer"] = rng.choice([{"type": "Nope"}, 5, {"type": "Split"}])
        what = f"pre_tokenizer {state['pre_tokenizer']!r}"
    return state, what, ANY


def _tokenizer_config(rng, config, ctx):
    if not isinstance(config, dict):
        return None
    key = rng.choice(["model_max_length", "model_max_length", "do_lower_case", "pad_token",
                      "cls_token", "unk_token", "mask_token", "add_prefix_space",
                      "split_by_punct", "added_tokens_decoder", "sep_token"])
    value = rng.choice(["512", 1e30, -1, 0, None, 10**40, "yes", 5, {}, {"content": 5},
                        ["<pad>"], {"content": "<nope>"}, "[UNK]", "<s>", True,
                        {"99999": {"content": "<x>"}}, {"x": 1}, {"0": {"content": ""}},
                        *ODD_STRINGS, {"content": "\ud800"}, "[UNK]\n[X]",
                        {"0": {"content": "\ud800"}}, {"3": {"content": "a\nb"}}])
    config[key] = value
    return config, f"{key} = {value!r}", ANY


def _special_tokens_map(rng, values, ctx):
    if not isinstance(values, dict):
        return None
    key = rng.choice(["pad_token", "cls_token", "sep_token", "mask_token", "unk_token",
                      "additional_special_tokens"])
    value = rng.choice([5, None, "", {"content": None}, {"content": "<q>"}, ["x"], "[SEP]",
                        "</s>", {"content": "[CLS]", "lstrip": "x"}, [{"content": 1}],
                        *ODD_STRINGS, {"content": "\ud800"}, "[UNK]\n[X]"])
    values[key] = value
    return values, f"{key} = {value!r}", ANY


def _added_tokens(rng, values, ctx):
    if not isinstance(values, dict):
        return None
    choice = rng.choice([{"<z>": 5}, {"<z>": -1}, {"<z>": 10**6}, {"<z>": "x"}, [], {"": 300},
                         {"<z>": 299, "<y>": 299}, {"<z>": 2.0}, {"\ud800": 300},
                         {"a\nb": 300}])
    return choice, f"{choice!r}", ANY


tokenizer_json_edit = _json_file_edit("tokenizer.json", _tokenizer_json)
tokenizer_config_edit = _json_file_edit("tokenizer_config.json", _tokenizer_config)
special_tokens_map_edit = _json_file_edit("special_tokens_map.json", _special_tokens_map)
added_tokens_edit = _json_file_edit("added_tokens.json", _added_tokens)


def tokenizer_file_bytes(rng, folder, ctx):
    """A tokenizer file truncated, emptied, not JSON, not UTF-8, or a folder."""
    files = [f for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                         "vocab.txt", "vocab.json", "merges.txt", "spm.model",
                         "added_tokens.json") if (folder / f).is_file()]
    if not files:
        return None
    path = folder / rng.choice(files)
    raw = path.read_bytes()
    kind = rng.choice(["truncated", "empty", "garbage", "not-utf8", "list", "directory",
                       "deep"])
    if kind == "truncated":
        path.write_bytes(raw[: rng.randrange(max(1, len(raw)))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(rng.choice([3, 100, 5000])))
    elif kind == "not-utf8":
        at = rng.randrange(max(1, len(raw)))
        path.write_bytes(raw[:at] + b"\xff\xc3(" + raw[at:])
    elif kind == "list":
        path.write_text("[1, 2, 3]")
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text("[" * 100_000 + "]" * 100_000)
    return f"{path.name}: {kind}", ANY


def vocab_txt_edit(rng, folder, ctx):
    path = folder / "vocab.txt"
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    choice = rng.randrange(7)
    if choice == 0:
        lines, what = [], "empty"
    elif choice == 1:
        lines, what = lines + lines[:50], "50 duplicated lines at the end"
    elif choice == 2:
        token = rng.choice(["[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"])
        lines, what = [t for t in lines if t != token], f"{token} removed"
    elif choice == 3:
        lines, what = lines[:10], "ten lines"
    elif choice == 4:
        lines, what = lines + [f"extra{i}" for i in range(100)], "100 more tokens than the " \
                                                                 "embedding"
    elif choice == 5:
        lines, what = ["[PAD]"] * len(lines), "every line [PAD]"
    else:
        lines, what = lines + ["x" * 100_000], "a 100,000-character token"
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    expect = REFUSE if choice == 4 else ANY
    return f"vocab.txt: {what}", expect


def vocab_json_edit(rng, folder, ctx):
    """vocab.json (byte-level BPE) with ids repeated, negative, huge, or not an object."""
    path = folder / "vocab.json"
    if not path.is_file():
        return None
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except Exception:
        return None
    if not isinstance(vocab, dict) or len(vocab) < 2:
        return None
    tokens = sorted(vocab)
    choice = rng.randrange(7)
    if choice == 0:
        a, b = rng.sample(tokens, 2)
        vocab[a] = vocab[b]
        what = f"{a!r} and {b!r} share an id"
    elif choice == 1:
        vocab[rng.choice(tokens)] = -1
        what = "a negative id"
    elif choice == 2:
        vocab[rng.choice(tokens)] = rng.choice([10**6, 2**32 + 5, 99999999999])
        what = "an id past the embedding"
    elif choice == 3:
        vocab = rng.choice([[], "x", {}])
        what = f"{vocab!r}"
    elif choice == 4:
        del vocab[rng.choice([t for t in tokens if t in ("<s>", "</s>", "<pad>", "<unk>")]
                           or tokens)]
        what = "a special token removed"
    elif choice == 5:
        vocab = {t: i for i, t in enumerate(tokens[: len(tokens) // 4])}
        what = "three quarters of the tokens removed (merges name missing ones)"
    else:  # a merge longer than every token: the library panicked
        vocab = {t: i for i, t in enumerate(t for t in tokens if len(t) == 1)}
        what = "only the one-character tokens"
    _write_json(path, vocab)
    return f"vocab.json: {what}", ANY


def tokenizer_remove(rng, folder, ctx):
    """tokenizer.json removed (the slow files, if any, are read instead)."""
    if not (folder / "tokenizer.json").is_file():
        return None
    (folder / "tokenizer.json").unlink()
    return "tokenizer.json removed", ANY


def merges_edit(rng, folder, ctx):
    path = folder / "merges.txt"
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    choice = rng.randrange(4)
    if choice == 0:
        lines.append("a b c")
    elif choice == 1:
        lines.append("zz qq")  # tokens the vocabulary lacks
    elif choice == 2:
        lines = lines[:1]
    else:
        lines.append("onlyone")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"merges.txt edit {choice}", ANY


def spm_edit(rng, folder, ctx):
    path = folder / "spm.model"
    if not path.is_file():
        return None
    raw = bytearray(path.read_bytes())
    kind = rng.choice(["truncated", "flipped", "empty"])
    if kind == "truncated":
        raw = raw[: rng.randrange(max(1, len(raw)))]
    elif kind == "flipped":
        for _ in range(rng.choice([1, 5, 50])):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    return f"spm.model: {kind}", ANY


# -- the folder


def folder_edit(rng, folder, ctx):
    choice = rng.randrange(8)
    if choice == 0:
        for entry in folder.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        what = "emptied"
    elif choice == 1:
        ctx["target"] = str(folder / "config.json")
        what = "weights= names config.json, a file"
    elif choice == 2:
        if not (folder / "config.json").exists():
            return None
        (folder / "config.json").unlink()
        what = "config.json removed"
    elif choice == 3:
        files = [p for p in folder.iterdir() if p.is_file()]
        if not files:
            return None
        path = rng.choice(files)
        path.chmod(0)
        what = f"{path.name} chmod 000 (root reads it anyway)"
    elif choice == 4:
        ctx["target"] = str(folder / "no-such-folder")
        what = "weights= a path that does not exist"
    elif choice == 5:
        loop = folder / "loop"
        loop.symlink_to("loop")
        ctx["target"] = str(loop)
        what = "weights= a symlink to itself"
    elif choice == 6:
        if not (folder / "config.json").is_file():
            return None
        (folder / "config.json").rename(folder / "config.json.bak")
        (folder / "config.json").mkdir()
        what = "config.json is a folder"
    else:
        (folder / "model").mkdir(exist_ok=True)
        (folder / "model" / "manifest.json").write_text("{}")
        what = "a model/manifest.json beside (a half zoo model directory)"
    return f"folder: {what}", REFUSE if choice in (0, 1, 2, 4, 5, 6) else ANY


# (mutation, weight)
MUTATIONS: list[tuple[Callable, float]] = [
    (config_delete_key, 4), (config_odd_value, 10), (config_indivisible_heads, 1),
    (config_layers, 2), (config_vocab, 1.5), (config_zero_sizes, 1.5), (config_labels, 3),
    (config_architectures, 2), (config_model_type, 1), (config_positions, 2),
    (config_pad_token, 2), (config_type_vocab, 1), (config_modernbert, 4),
    (config_deberta, 3), (config_bert, 3), (config_truncated, 0.5), (config_json_list, 0.5),
    (config_bom, 0.5), (config_not_utf8, 0.5), (config_utf16, 0.3), (config_duplicate_key, 1),
    (config_nan_literal, 1.5), (config_deep, 0.5), (config_empty, 0.3), (config_huge_int, 1),
    (weights_missing_tensor, 2), (weights_extra_tensor, 1), (weights_wrong_shape, 2),
    (weights_wrong_dtype, 2), (weights_non_finite, 1.5), (weights_truncated, 1),
    (weights_zero_length, 0.5), (weights_garbage, 1), (weights_header_garbage, 1),
    (weights_header_entries, 3), (weights_header_length, 1), (weights_duplicate_names, 1),
    (weights_header_padding, 0.3), (weights_replaced, 1), (weights_to_bin, 1.5),
    (weights_bin_hostile, 1), (weights_index, 1.5),
    (tokenizer_json_edit, 4), (tokenizer_config_edit, 3), (special_tokens_map_edit, 2),
    (added_tokens_edit, 1), (tokenizer_file_bytes, 2), (vocab_txt_edit, 2),
    (tokenizer_remove, 1), (vocab_json_edit, 1.5), (merges_edit, 1), (spm_edit, 1),
    (folder_edit, 1.5),
]


def mutate(rng: random.Random, folder: Path, ctx: dict) -> list[dict]:
    """1-3 mutations that apply to ``folder``, applied in turn."""
    wanted = rng.choice([1, 1, 2, 2, 3])
    done: list[dict] = []
    funcs, weights = zip(*MUTATIONS)
    for _ in range(40):
        if len(done) == wanted:
            break
        fn = rng.choices(funcs, weights)[0]
        try:
            result = fn(rng, folder, ctx)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            result = None  # the folder is already too broken for this one
        if result is not None:
            done.append({"mutation": fn.__name__, "what": result[0], "expect": result[1]})
            if len(result) > 2:
                done[-1]["key"] = result[2]
    return done


# ----------------------------------------------------------------------------- the worker


def _frames(err: BaseException, n: int = 6) -> list[str]:
    return [f"{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in traceback.extract_tb(err.__traceback__)[-n:]]


def _zoo_frame(err: BaseException) -> str:
    """The innermost frame in the zoo package: where a crash class comes from."""
    for f in reversed(traceback.extract_tb(err.__traceback__)):
        if f"{os.sep}zoo{os.sep}" in f.filename and "zoo_tests" not in f.filename:
            rel = f.filename.split(f"{os.sep}zoo{os.sep}", 1)[1]
            return f"zoo/{rel}:{f.name}"
    return "-"


def run_one(weights: str, model_type: str) -> dict:
    """Load and run one folder; the case's status and what happened."""
    import warnings

    import zoo
    from zoo.checkpoint import CheckpointMismatchError
    from zoo.errors import USER_ERRORS

    stage = "load"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = zoo.load(f"{model_type}-custom", weights=weights)
            task = model.task
            if task is not None and task.label_kind is not None:
                stage = "predict"
                out = model.predict(TEXTS)
                summary = repr(out)[:200]
            else:
                stage = "encode"
                out = model.encode(TEXTS)
                summary = f"shape {tuple(out.shape)}"
        return {"status": "ok", "stage": stage, "head": model.info.head, "output": summary}
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # pyo3 panics are BaseExceptions
        msg = str(err)
        result = {"stage": stage, "error": f"{type(err).__name__}: {msg[:600]}",
                  "message_chars": len(msg)}
        if isinstance(err, USER_ERRORS) and "\n" not in msg:
            result["status"] = "refusal"
        elif isinstance(err, CheckpointMismatchError):
            result["status"] = "report"
        else:
            result["status"] = "crash"
            result["class"] = f"{type(err).__name__} @ {_zoo_frame(err)}"
            result["frames"] = _frames(err)
            if isinstance(err, USER_ERRORS):
                result["class"] = f"multi-line {result['class']}"
        return result


def worker() -> int:
    """Read cases (JSON lines) on stdin, answer each on the original stdout."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to the log
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    import zoo  # noqa: F401  (imported once, before the first case's clock starts)

    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    for line in sys.stdin:
        case = json.loads(line)
        t0 = time.perf_counter()
        result = run_one(case["weights"], case["model_type"])
        result["seconds"] = round(time.perf_counter() - t0, 2)
        proto.write(json.dumps(result, default=str) + "\n")
        proto.flush()
    return 0


class Worker:
    """A worker subprocess, restarted after a hang, a death or too much memory."""

    def __init__(self, log: Path, timeout: float, max_rss: float):
        self.log, self.timeout, self.max_rss = log, timeout, max_rss
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.malformed_fuzz", "--worker"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("ab"),
            text=True, env=env)
        ready = self._read(120)
        if not isinstance(ready, dict) or not ready.get("ready"):
            raise RuntimeError(f"the worker did not start (see {self.log})")

    def _rss_gb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
        except OSError:
            pass
        return 0.0

    def _read(self, timeout: float):
        """The next line as JSON; "hang" past ``timeout``; "memory"; "died"."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return "hang"
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                line = self.proc.stdout.readline()
                return json.loads(line) if line else "died"
            if self.proc.poll() is not None:
                return "died"
            if self._rss_gb() > self.max_rss:
                return "memory"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, weights: str, model_type: str) -> dict:
        if self.proc is None:
            self._start()
        self.proc.stdin.write(json.dumps({"weights": weights, "model_type": model_type}) + "\n")
        self.proc.stdin.flush()
        t0 = time.perf_counter()
        got = self._read(self.timeout)
        if isinstance(got, dict):
            return got
        rss = self._rss_gb()
        code = self.proc.poll()
        self.stop()
        seconds = round(time.perf_counter() - t0, 2)
        if got == "hang":
            return {"status": "hang", "seconds": seconds, "error": f"no answer in "
                    f"{self.timeout:g} s", "class": "hang"}
        if got == "memory":
            return {"status": "crash", "seconds": seconds, "class": "memory",
                    "error": f"the worker grew past {self.max_rss:g} GB ({rss:.1f} GB)"}
        return {"status": "crash", "seconds": seconds, "class": f"worker died ({code})",
                "error": f"the worker died with exit status {code} (see {self.log})"}


# ----------------------------------------------------------------------------- the run


def build_bases(root: Path, names: list[str]) -> dict[str, Path]:
    built = {}
    for name in names:
        path = root / name
        if not path.is_dir():
            tmp = root / f".{name}.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            BASES[name][1](tmp)
            tmp.rename(path)
        built[name] = path
    return built


def _rmtree(path: Path) -> None:
    """Remove a case folder whatever the mutations left (chmod 000, folders, links)."""
    if not path.exists() and not path.is_symlink():
        return
    for p in path.rglob("*"):
        try:
            if not p.is_symlink():
                p.chmod(0o700 if p.is_dir() else 0o600)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def draw_case(index: int, seed: int, bases: dict[str, Path], types: list[str]) -> dict:
    rng = random.Random(f"{seed}-{index}")
    model_type = rng.choice(types)
    base = rng.choice(sorted(n for n in bases if BASES[n][0] == model_type))
    return {"index": index, "model_type": model_type, "base": base, "rng": rng}


def run_case(case: dict, bases: dict[str, Path], work: Path, pool: Worker, keep: bool) -> dict:
    folder = work / f"{case['index']:04d}"
    _rmtree(folder)
    shutil.copytree(bases[case["base"]], folder, symlinks=True)
    ctx: dict = {"base_config": _read_config(folder), "model_type": case["model_type"]}
    mutations = mutate(case["rng"], folder, ctx) if case["index"] >= 0 else []
    target = ctx.get("target", str(folder))
    result = {"index": case["index"], "model_type": case["model_type"], "base": case["base"],
              "mutations": mutations, "weights": target}
    result |= pool.run(target, case["model_type"])
    if result["status"] == "ok" and any(_must_refuse(m, ctx, folder) for m in mutations):
        result["status"] = "missed"
    if result["status"] == "ok" and not keep:
        _rmtree(folder)
    else:
        _defuse(folder)
    return result


def _defuse(folder: Path) -> None:
    """Take the FIFOs and links to devices out of a case folder that stays: anything that
    later reads the folder (grep -r, a backup) would block on them or read forever."""
    for p in list(folder.rglob("*")) if folder.is_dir() else ():
        try:
            if p.is_fifo() or (p.is_symlink() and os.readlink(p).startswith("/dev/")):
                p.unlink()
                p.with_name(p.name + ".removed").write_text("a FIFO or device link was here\n")
        except OSError:
            pass


def _must_refuse(mutation: dict, ctx: dict, folder: Path) -> bool:
    """Whether a mutation still makes the folder one to refuse, all mutations applied."""
    if mutation["expect"] != REFUSE:
        return False
    if "key" not in mutation:
        return True
    final, base = _read_config(folder) or {}, ctx["base_config"] or {}
    return final.get(mutation["key"]) != base.get(mutation["key"])


def summarise(results: list[dict]) -> dict:
    counts: dict[str, int] = {}
    classes: dict[str, dict] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        if r["status"] in ("crash", "hang", "missed"):
            key = r.get("class") or f"missed: {r['mutations'][0]['mutation']}"
            entry = classes.setdefault(key, {"count": 0, "cases": [], "example": None})
            entry["count"] += 1
            entry["cases"].append(r["index"])
            if entry["example"] is None:
                entry["example"] = {"mutations": [m["what"] for m in r["mutations"]],
                                    "base": r["base"], "error": r.get("error"),
                                    "frames": r.get("frames")}
    return {"counts": counts, "classes": dict(sorted(classes.items(),
                                                     key=lambda kv: -kv[1]["count"]))}


def _say(line: str) -> None:
    """Print a line whatever it quotes (lone surrogates of mutated files included)."""
    print(line.encode("utf-8", "backslashreplace").decode("utf-8"), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.malformed_fuzz",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="cases (default 300)")
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--types", default=",".join(MODEL_TYPES),
                        help="model types to draw from (default: all)")
    parser.add_argument("--only", nargs="*", type=int, metavar="INDEX", help="these cases only")
    parser.add_argument("--no-bases", action="store_true", help="skip the unmutated bases")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case (60)")
    parser.add_argument("--max-rss-gb", type=float, default=8.0,
                        help="a worker growing past this is a crash (8)")
    parser.add_argument("--keep", action="store_true", help="keep the folders of ok cases")
    parser.add_argument("--out", default="runs/malformed-fuzz")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker()
    types = args.types.split(",")
    unknown = sorted(set(types) - set(MODEL_TYPES))
    if unknown:
        parser.error(f"unknown model types {', '.join(unknown)} "
                     f"(expected {', '.join(MODEL_TYPES)})")
    if args.n < 0 or args.timeout <= 0:
        parser.error("--n must be >= 0 and --timeout > 0")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    bases = build_bases(out / "bases", [n for n, (t, _) in BASES.items() if t in types])
    pool = Worker(out / "worker.log", args.timeout, args.max_rss_gb)
    work = out / "work"
    results: list[dict] = []
    try:
        with (out / "results.jsonl").open("w") as fh:
            def record(r: dict) -> None:
                fh.write(json.dumps(r, default=str) + "\n")
                fh.flush()
                results.append(r)
                line = f"[{r['index']}] {r['status']} {r['base']} ({r.get('seconds', '-')}s)"
                if r["mutations"]:
                    line += " :: " + " + ".join(m["what"] for m in r["mutations"])[:200]
                if r.get("error"):
                    line += " :: " + r["error"][:200].replace("\n", " | ")
                if r.get("class"):
                    line += f" :: {r['class']}"
                _say(line)

            if not args.no_bases and not args.only:
                for i, name in enumerate(sorted(bases)):
                    r = run_case({"index": -1 - i, "model_type": BASES[name][0], "base": name,
                                  "rng": None}, bases, work, pool, args.keep)
                    r["base_check"] = True
                    record(r)
                    if r["status"] != "ok":  # a base the zoo cannot read is no base
                        print(f"dropping base {name}: {r.get('error')}", flush=True)
                        bases.pop(name)
            indices = args.only or range(args.start, args.start + args.n)
            for index in indices:
                case = draw_case(index, args.seed, bases, [t for t in types if any(
                    BASES[n][0] == t for n in bases)])
                record(run_case(case, bases, work, pool, args.keep))
    finally:
        pool.stop()
    summary = summarise([r for r in results if r["index"] >= 0])
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary["counts"]), f"results: {out / 'results.jsonl'}", flush=True)
    for key, entry in summary["classes"].items():
        _say(f"  {entry['count']:4d}  {key}  (e.g. case {entry['cases'][0]}: "
             f"{'; '.join(entry['example']['mutations'])[:160]})")
    bad = {"crash", "hang", "missed"} & set(summary["counts"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
