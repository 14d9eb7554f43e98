"""The DeBERTa-v2/v3 converter: HF ``config.json`` -> ``DebertaV2Config`` and the name table
HF -> zoo. Everything else about HF folders (files, tokenizers, heads) is ``zoo.hf``'s.

Read from ``config.json`` as transformers 4.x writes it on the hub (``pos_att_type`` as the
string ``"p2c|c2p"``, ``torch_dtype``) and as transformers 5.x ``save_pretrained`` writes it
(``pos_att_type`` a list, ``dtype``). Refused: ``pooler_hidden_size != hidden_size``, an
``attention_head_size`` other than ``hidden_size / num_attention_heads``, activations the
zoo does not implement, the legacy masked-LM head when ``embedding_size != hidden_size``.

Masked-LM heads in both of transformers' layouts map onto the zoo's MLM head
(dense -> act -> LayerNorm -> decoder tied to the word embeddings, + bias): the legacy
``cls.predictions.*`` one (``legacy: true``, the default) when ``embedding_size ==
hidden_size``, and ``lm_predictions.lm_head.*`` (``legacy: false``, and the original
DeBERTa-v3 checkpoints on the hub).
"""

from __future__ import annotations

from typing import Any, Mapping

from zoo.errors import ConfigError
from zoo.hf import (Architecture, HFExport, NameTable, check_head_size, config_keys,
                    make_config, resolve_decoder)
from zoo.models.deberta_v2.modeling import ACTIVATIONS, POS_ATT_TYPES, DebertaV2Config

MODEL_TYPE = "deberta-v2"

# DebertaV2Config field <- HF config.json key (first present wins; absent: HF's default,
# which is also the dataclass default).
_HF_KEYS = {
    "vocab_size": ("vocab_size",),
    "hidden_size": ("hidden_size",),
    "num_layers": ("num_hidden_layers",),
    "num_heads": ("num_attention_heads",),
    "intermediate_size": ("intermediate_size",),
    "max_position_embeddings": ("max_position_embeddings",),
    "type_vocab_size": ("type_vocab_size",),
    "layer_norm_eps": ("layer_norm_eps",),
    "hidden_act": ("hidden_act",),
    "dropout": ("hidden_dropout_prob",),
    "attention_dropout": ("attention_probs_dropout_prob",),
    "classifier_dropout": ("cls_dropout", "hidden_dropout_prob"),
    "pooler_hidden_act": ("pooler_hidden_act",),
    "embedding_size": ("embedding_size",),
    "relative_attention": ("relative_attention",),
    "max_relative_positions": ("max_relative_positions",),
    "position_buckets": ("position_buckets",),
    "pos_att_type": ("pos_att_type",),
    "share_att_key": ("share_att_key",),
    "position_biased_input": ("position_biased_input",),
    "conv_kernel_size": ("conv_kernel_size",),
    "conv_groups": ("conv_groups",),
    "conv_act": ("conv_act",),
}
REQUIRED = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")


def _norm_rel_ebd(value: Any, where: str) -> str:
    """HF splits ``norm_rel_ebd`` on ``|`` and looks for ``layer_norm`` among the parts."""
    if value is None:
        return "none"
    if not isinstance(value, str):
        raise ConfigError(f"{where}: norm_rel_ebd {value!r} is not supported (expected "
                          "'none' or 'layer_norm')")
    parts = {p.strip() for p in value.lower().split("|")}
    unknown = sorted(parts - {"none", "layer_norm", ""})
    if unknown:
        raise ConfigError(f"{where}: norm_rel_ebd {value!r} is not supported (only "
                          "'layer_norm' or 'none')")
    return "layer_norm" if "layer_norm" in parts else "none"


def config_from_hf(hf: Mapping, where: str = "config.json") -> DebertaV2Config:
    """``DebertaV2Config`` from an HF ``config.json`` of model_type ``deberta-v2``."""
    if not isinstance(hf, Mapping):
        raise ConfigError(f"{where}: expected a JSON object")
    if hf.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"{where}: model_type {hf.get('model_type')!r} is not "
                          f"{MODEL_TYPE!r}")
    hidden = hf.get("hidden_size")
    sized = isinstance(hidden, int) and not isinstance(hidden, bool)  # else named below
    if sized and hf.get("pooler_hidden_size") not in (None, hidden):
        raise ConfigError(f"{where}: pooler_hidden_size {hf['pooler_hidden_size']!r} is not "
                          f"supported (the zoo's classification head needs hidden_size {hidden})")
    classes = hf.get("architectures") if isinstance(hf.get("architectures"), list) else []
    if hf.get("embedding_size") not in (None, hidden) and hf.get("legacy", True) is not False \
            and any(str(c).endswith("ForMaskedLM") for c in classes):
        raise ConfigError(f"{where}: the legacy masked-LM head with embedding_size "
                          f"{hf['embedding_size']!r} other than hidden_size {hidden!r} is not "
                          "supported")
    check_head_size(hf, "attention_head_size", where)
    for key in ("hidden_act", "pooler_hidden_act", "conv_act"):
        value = hf.get(key)
        if value is not None and (not isinstance(value, str) or value not in ACTIVATIONS):
            raise ConfigError(f"{where}: {key} {value!r} is not supported "
                              f"(supported: {', '.join(ACTIVATIONS)})")
    values: dict[str, Any] = {"model_type": MODEL_TYPE}
    for field, keys in _HF_KEYS.items():
        for key in keys:
            if hf.get(key) is not None:
                values[field] = hf[key]
                break
    missing = [_HF_KEYS[f][0] for f in REQUIRED if f not in values]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    pos_att_type = values.get("pos_att_type")
    if pos_att_type is not None:
        if isinstance(pos_att_type, str):
            parts = [p.strip() for p in pos_att_type.lower().split("|") if p.strip()]
        elif isinstance(pos_att_type, (list, tuple)) and all(isinstance(p, str)
                                                             for p in pos_att_type):
            parts = list(pos_att_type)
        else:
            raise ConfigError(f"{where}: pos_att_type {pos_att_type!r} is not supported "
                              f"(a list of {', '.join(POS_ATT_TYPES)})")
        parts = [p for p in parts if p != "none"]  # "none": old configs' spelling of none
        unknown = [p for p in parts if p not in POS_ATT_TYPES]
        if unknown:
            raise ConfigError(f"{where}: pos_att_type {pos_att_type!r} is not supported "
                              f"({', '.join(unknown)}; only {', '.join(POS_ATT_TYPES)})")
        values["pos_att_type"] = tuple(dict.fromkeys(parts))  # HF counts each type once
    values["norm_rel_ebd"] = _norm_rel_ebd(hf.get("norm_rel_ebd"), where)
    return make_config(DebertaV2Config, values, where)


# ------------------------------------------------------------------------------ the name table

# HF parameter (after removing the task models' ``deberta.`` prefix) -> zoo path. ``{i}`` is
# a layer index, ``{cls}`` the name the task head is stored under. "T" marks a Linear weight,
# stored (out, in) by torch and transposed to NNX's (in, out) kernel.
STAGED_BIAS = "heads/mlm/predictions_bias"  # not a parameter: resolved by ``finish``
_L = r"encoder\.layer\.(?P<i>\d+)"
RULES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.word_embeddings\.weight", "encoder/embeddings/word/embedding"),
    (r"embeddings\.position_embeddings\.weight", "encoder/embeddings/position/embedding"),
    (r"embeddings\.token_type_embeddings\.weight", "encoder/embeddings/token_type/embedding"),
    (r"embeddings\.embed_proj\.weight", "encoder/embeddings/projection/kernel T"),
    (r"embeddings\.LayerNorm\.weight", "encoder/embeddings/norm/scale"),
    (r"embeddings\.LayerNorm\.bias", "encoder/embeddings/norm/bias"),
    (r"encoder\.rel_embeddings\.weight", "encoder/rel_embeddings/embedding"),
    (r"encoder\.LayerNorm\.weight", "encoder/rel_norm/scale"),
    (r"encoder\.LayerNorm\.bias", "encoder/rel_norm/bias"),
    # the ConvLayer (conv_kernel_size > 0): torch's (out, in / groups, k) Conv1d weight,
    # axes reversed by "T" to the zoo's (k, in / groups, out)
    (r"encoder\.conv\.conv\.weight", "encoder/conv/kernel T"),
    (r"encoder\.conv\.conv\.bias", "encoder/conv/bias"),
    (r"encoder\.conv\.LayerNorm\.weight", "encoder/conv/norm/scale"),
    (r"encoder\.conv\.LayerNorm\.bias", "encoder/conv/norm/bias"),
    (rf"{_L}\.attention\.self\.(?P<p>query|key|value|pos_key|pos_query)_proj\.weight",
     "encoder/layers/{i}/attention/{p}/kernel T"),
    (rf"{_L}\.attention\.self\.(?P<p>query|key|value|pos_key|pos_query)_proj\.bias",
     "encoder/layers/{i}/attention/{p}/bias"),
    (rf"{_L}\.attention\.output\.dense\.weight", "encoder/layers/{i}/attention/output/kernel T"),
    (rf"{_L}\.attention\.output\.dense\.bias", "encoder/layers/{i}/attention/output/bias"),
    (rf"{_L}\.attention\.output\.LayerNorm\.weight", "encoder/layers/{i}/attention_norm/scale"),
    (rf"{_L}\.attention\.output\.LayerNorm\.bias", "encoder/layers/{i}/attention_norm/bias"),
    (rf"{_L}\.intermediate\.dense\.weight", "encoder/layers/{i}/intermediate/kernel T"),
    (rf"{_L}\.intermediate\.dense\.bias", "encoder/layers/{i}/intermediate/bias"),
    (rf"{_L}\.output\.dense\.weight", "encoder/layers/{i}/output/kernel T"),
    (rf"{_L}\.output\.dense\.bias", "encoder/layers/{i}/output/bias"),
    (rf"{_L}\.output\.LayerNorm\.weight", "encoder/layers/{i}/output_norm/scale"),
    (rf"{_L}\.output\.LayerNorm\.bias", "encoder/layers/{i}/output_norm/bias"),
    # sequence classification / regression: ContextPooler + classifier
    (r"pooler\.dense\.weight", "heads/{cls}/dense/kernel T"),
    (r"pooler\.dense\.bias", "heads/{cls}/dense/bias"),
    (r"classifier\.weight", "heads/{cls}/classifier/kernel T"),
    (r"classifier\.bias", "heads/{cls}/classifier/bias"),
    # masked LM, legacy layout (transformers' default, legacy=true)
    (r"cls\.predictions\.transform\.dense\.weight", "heads/mlm/dense/kernel T"),
    (r"cls\.predictions\.transform\.dense\.bias", "heads/mlm/dense/bias"),
    (r"cls\.predictions\.transform\.LayerNorm\.weight", "heads/mlm/norm/scale"),
    (r"cls\.predictions\.transform\.LayerNorm\.bias", "heads/mlm/norm/bias"),
    # The decoder's own bias is the one transformers' forward adds; ``cls.predictions.bias``
    # is tied to it (the only copy a tied 5.x file keeps) unless tie_word_embeddings is
    # false, when it is unused: staged here, ``finish`` keeps it only in place of the other.
    (r"cls\.predictions\.decoder\.bias", "heads/mlm/decoder/bias"),
    (r"cls\.predictions\.bias", STAGED_BIAS),
    # stored only when not tied to the word embeddings (tie_word_embeddings=false)
    (r"cls\.predictions\.decoder\.weight", "heads/mlm/decoder/kernel T"),
    # masked LM, DeBERTa's own layout (legacy=false; the hub's DeBERTa-v3 checkpoints):
    # the decoder is always the word embeddings
    (r"lm_predictions\.lm_head\.dense\.weight", "heads/mlm/dense/kernel T"),
    (r"lm_predictions\.lm_head\.dense\.bias", "heads/mlm/dense/bias"),
    (r"lm_predictions\.lm_head\.LayerNorm\.weight", "heads/mlm/norm/scale"),
    (r"lm_predictions\.lm_head\.LayerNorm\.bias", "heads/mlm/norm/bias"),
    (r"lm_predictions\.lm_head\.bias", "heads/mlm/decoder/bias"),
)
IGNORED = (
    (r"embeddings\.position_ids", "buffer"),
    (r"mask_predictions\..*", "DeBERTa-v3 replaced-token-detection head (not used)"),
)
TABLE = NameTable(rules=RULES, ignored=IGNORED, prefixes=("deberta.",), pooler=r"pooler\.")


def finish(params: dict, config: DebertaV2Config) -> list[str]:
    """Edits the mapped params in place; returns notes on what it dropped (the HF layer may
    report them beside the name table's).

    - The legacy MLM head's ``cls.predictions.bias`` becomes the decoder bias when the file
      has no ``cls.predictions.decoder.bias`` (tied files keep only the former); otherwise
      it is transformers' unused copy and dropped.
    - A checkpoint of a model without ``position_biased_input`` may still hold an (unused)
      absolute position table (the original DeBERTa code always builds it; transformers
      ignores it on load): dropped.
    - The MLM decoder's kernel is the transposed word-embedding table unless the checkpoint
      stores an untied one.
    """
    notes = resolve_decoder(params, STAGED_BIAS, "cls.predictions.bias")
    if not config.position_biased_input and \
            params.pop("encoder/embeddings/position/embedding", None) is not None:
        notes.append("embeddings.position_embeddings.weight: skipped (unused: "
                     "position_biased_input is false)")
    return notes


def config_to_hf(config: DebertaV2Config) -> dict:
    """The ``config.json`` keys of ``config`` (the inverse of ``config_from_hf``)."""
    return config_keys(config, _HF_KEYS) | {"norm_rel_ebd": config.norm_rel_ebd,
                                            "pooler_hidden_size": config.hidden_size}


ARCHITECTURE = Architecture(
    name="deberta_v2", model_types={MODEL_TYPE: "deberta-v2-custom"},
    config_class=DebertaV2Config, config_from_hf=config_from_hf, table=TABLE, finish=finish,
    config_to_hf=config_to_hf, tied_mlm_layout=r"lm_predictions\.",
    exports={MODEL_TYPE: HFExport("DebertaV2", "deberta.", never=r"cls\.|lm_predictions\.")})
