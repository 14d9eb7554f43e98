"""The RoBERTa family's converter: HF ``config.json`` -> ``RobertaConfig`` and the name table
HF -> zoo (RoBERTa and XLM-RoBERTa share both). Folders, weights and tokenizers are
``zoo.hf``'s.
"""

from __future__ import annotations

from typing import Any, Mapping

from zoo.errors import ConfigError
from zoo.hf import (Architecture, HFExport, NameTable, POST_LN_RULES, config_keys, make_config,
                    resolve_decoder)
from zoo.models.roberta.modeling import MODEL_TYPES, RobertaConfig

# RobertaConfig field -> config.json key (first present wins) and transformers' default for
# an absent key (transformers 5's RobertaConfig / XLMRobertaConfig; None: required).
_HF_KEYS: dict[str, tuple[tuple[str, ...], Any]] = {
    "vocab_size": (("vocab_size",), None),
    "hidden_size": (("hidden_size",), None),
    "num_layers": (("num_hidden_layers",), None),
    "num_heads": (("num_attention_heads",), None),
    "intermediate_size": (("intermediate_size",), None),
    "max_position_embeddings": (("max_position_embeddings",), 512),
    "type_vocab_size": (("type_vocab_size",), 2),
    "layer_norm_eps": (("layer_norm_eps",), 1e-12),
    "hidden_act": (("hidden_act",), "gelu"),
    "dropout": (("hidden_dropout_prob",), 0.1),
    "attention_dropout": (("attention_probs_dropout_prob",), 0.1),
    # RobertaClassificationHead: classifier_dropout, else hidden_dropout_prob
    "classifier_dropout": (("classifier_dropout", "hidden_dropout_prob"), 0.1),
    "pad_token_id": (("pad_token_id",), 1),
}
# Options whose other values change the network; (key, the value implemented, why).
_FIXED = (
    ("position_embedding_type", "absolute", "only learned absolute positions"),
    ("is_decoder", False, "a causal decoder; this is a bidirectional encoder"),
    ("add_cross_attention", False, "cross-attention layers"),
)


def config_from_hf(hf: Mapping, where: str = "config.json") -> RobertaConfig:
    """``RobertaConfig`` from an HF ``config.json`` (model_type roberta or xlm-roberta), as
    transformers 4.x writes it on the hub (``torch_dtype``, ``position_embedding_type``,
    ``output_past``) or 5.x's ``save_pretrained`` does (``dtype``). Keys a file leaves out
    take transformers' defaults, as ``from_pretrained`` does."""
    if not isinstance(hf, Mapping):
        raise ConfigError(f"{where}: expected a JSON object")
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not a RoBERTa type "
                          f"(supported: {', '.join(MODEL_TYPES)})")
    for key, implemented, why in _FIXED:
        value = hf.get(key, implemented)
        if value is not None and value != implemented:
            raise ConfigError(f"{where}: {key} {value!r} is not supported ({why}; "
                              f"expected {implemented!r})")
    if "pad_token_id" in hf and hf["pad_token_id"] is None:
        raise ConfigError(f"{where}: pad_token_id None is not supported (RoBERTa's positions "
                          "are counted from the padding id)")
    missing = [keys[0] for keys, default in _HF_KEYS.values()
               if default is None and all(hf.get(k) is None for k in keys)]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    values: dict[str, Any] = {"model_type": model_type}
    for field, (keys, default) in _HF_KEYS.items():
        values[field] = next((hf[k] for k in keys if hf.get(k) is not None), default)
    return make_config(RobertaConfig, values, where)


# ------------------------------------------------------------------------------ the name table

RULES: tuple[tuple[str, str], ...] = (
    *POST_LN_RULES,  # the embeddings and encoder.layer.N blocks, named as BERT's
    # RobertaClassificationHead (sequence classification and regression)
    (r"classifier\.dense\.weight", "heads/{cls}/dense/kernel T"),
    (r"classifier\.dense\.bias", "heads/{cls}/dense/bias"),
    (r"classifier\.out_proj\.weight", "heads/{cls}/classifier/kernel T"),
    (r"classifier\.out_proj\.bias", "heads/{cls}/classifier/bias"),
    # token classification: dropout -> classifier
    (r"classifier\.weight", "heads/{cls}/classifier/kernel T"),
    (r"classifier\.bias", "heads/{cls}/classifier/bias"),
    # RobertaLMHead: dense -> gelu -> layer_norm -> decoder
    (r"lm_head\.dense\.weight", "heads/mlm/dense/kernel T"),
    (r"lm_head\.dense\.bias", "heads/mlm/dense/bias"),
    (r"lm_head\.layer_norm\.weight", "heads/mlm/norm/scale"),
    (r"lm_head\.layer_norm\.bias", "heads/mlm/norm/bias"),
    (r"lm_head\.decoder\.weight", "heads/mlm/decoder/kernel T"),  # files of untied decoders
    (r"lm_head\.decoder\.bias", "heads/mlm/decoder/bias"),
    (r"lm_head\.bias", "heads/mlm/lm_head_bias"),  # LM_HEAD_BIAS, resolved by ``finish``
)
LM_HEAD_BIAS = "heads/mlm/lm_head_bias"
IGNORED = (
    (r"embeddings\.position_ids", "buffer"),
    (r"embeddings\.token_type_ids", "buffer"),
    (r"pooler\.dense\.(weight|bias)", "RobertaModel's pooler: RoBERTa's task heads do not "
                                      "use it"),
)

TABLE = NameTable(rules=RULES, ignored=IGNORED, prefixes=("roberta.",))


def finish(params: dict, config: RobertaConfig | None = None) -> list[str]:
    """The MLM decoder as transformers computes it, from whichever copies a file holds:
    RobertaLMHead's decoder bias is tied to ``lm_head.bias`` (zoo.hf.resolve_decoder)."""
    return resolve_decoder(params, LM_HEAD_BIAS, "lm_head.bias")


def config_to_hf(config: RobertaConfig) -> dict:
    """The ``config.json`` keys of ``config`` (the inverse of ``config_from_hf``)."""
    return config_keys(config, {field: keys for field, (keys, _) in _HF_KEYS.items()})


# The classifier's names (zoo.hf.export): RobertaClassificationHead's dense / out_proj for
# sequence classification, one ``classifier`` Linear for tokens.
_NEVER_FOR = {"ForSequenceClassification": r"classifier\.(weight|bias)",
              "ForTokenClassification": r"classifier\.(dense|out_proj)"}
EXPORTS = {"roberta": HFExport("Roberta", "roberta.", never_for=_NEVER_FOR),
           "xlm-roberta": HFExport("XLMRoberta", "roberta.", never_for=_NEVER_FOR)}

ARCHITECTURE = Architecture(
    name="roberta",
    model_types={"roberta": "roberta-custom", "xlm-roberta": "xlm-roberta-custom"},
    config_class=RobertaConfig, config_from_hf=config_from_hf, table=TABLE, finish=finish,
    config_to_hf=config_to_hf, exports=EXPORTS)
