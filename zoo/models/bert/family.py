"""The BERT family's converter: HF ``config.json`` -> ``BertConfig`` and the name table
HF -> zoo (BERT, ELECTRA, DistilBERT). Everything else about HF folders is ``zoo.hf``'s.
"""

from __future__ import annotations

from typing import Any, Mapping

from zoo.errors import ConfigError
from zoo.hf import (Architecture, HFExport, NameTable, POST_LN_RULES, config_keys, make_config,
                    make_family, resolve_decoder)
from zoo.models.bert.modeling import BertConfig

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
    classes = hf.get("architectures")
    if model_type == "electra" and isinstance(classes, list) and "ElectraForMaskedLM" in classes:
        raise ConfigError(f"{where}: ElectraForMaskedLM (an ELECTRA generator) is not "
                          "supported; the zoo reads ELECTRA discriminators (ElectraModel, "
                          "ElectraForPreTraining, ...ForSequenceClassification, "
                          "...ForTokenClassification)")
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
    return make_config(BertConfig, values, where)


# ------------------------------------------------------------------------------ the name table

# HF parameter (after removing a task prefix) -> zoo path. ``{i}`` is a layer index,
# ``{cls}`` the name the classifier head is stored under. "T" marks a Linear weight, stored
# (out, in) by torch and transposed to NNX's (in, out) kernel.
_L = r"(?P<i>\d+)"
STAGED_BIAS = "heads/mlm/predictions_bias"  # not a parameter: resolved by ``finish``
NAME_TABLE: tuple[tuple[str, str], ...] = (
    *POST_LN_RULES,  # BERT / ELECTRA embeddings and layers (DistilBERT's embeddings too)
    (r"embeddings_project\.weight", "encoder/embeddings/projection/kernel T"),
    (r"embeddings_project\.bias", "encoder/embeddings/projection/bias"),
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
    # masked-LM heads: the decoder is tied to the word embeddings unless the file stores it
    # (tie_word_embeddings false); BERT's decoder bias is tied to cls.predictions.bias, staged
    # here for ``finish`` (zoo.hf.resolve_decoder)
    (r"cls\.predictions\.transform\.dense\.weight", "heads/mlm/dense/kernel T"),
    (r"cls\.predictions\.transform\.dense\.bias", "heads/mlm/dense/bias"),
    (r"cls\.predictions\.transform\.LayerNorm\.(weight|gamma)", "heads/mlm/norm/scale"),
    (r"cls\.predictions\.transform\.LayerNorm\.(bias|beta)", "heads/mlm/norm/bias"),
    (r"cls\.predictions\.decoder\.weight", "heads/mlm/decoder/kernel T"),
    (r"cls\.predictions\.decoder\.bias", "heads/mlm/decoder/bias"),
    (r"cls\.predictions\.bias", STAGED_BIAS),
    (r"vocab_transform\.weight", "heads/mlm/dense/kernel T"),
    (r"vocab_transform\.bias", "heads/mlm/dense/bias"),
    (r"vocab_layer_norm\.weight", "heads/mlm/norm/scale"),
    (r"vocab_layer_norm\.bias", "heads/mlm/norm/bias"),
    (r"vocab_projector\.weight", "heads/mlm/decoder/kernel T"),
    (r"vocab_projector\.bias", "heads/mlm/decoder/bias"),
)
# Stored tensors that are not parameters of the zoo's modules, skipped on purpose.
IGNORED = (
    (r"embeddings\.position_ids", "buffer"),
    (r"embeddings\.token_type_ids", "buffer"),
    (r"cls\.seq_relationship\.(weight|bias)", "next-sentence head (not used)"),
    (r"discriminator_predictions\..*", "ELECTRA replaced-token head (not used)"),
)

TABLE = NameTable(
    rules=NAME_TABLE, ignored=IGNORED,
    prefixes=("bert.", "electra.", "distilbert."),  # task models' encoder prefix
    renames={"p": {"q": "query", "k": "key", "v": "value", "out": "output"}},
    pooler=r"pooler\.",
)



def config_to_hf(config: BertConfig) -> dict:
    """The ``config.json`` keys of ``config`` (the inverse of ``config_from_hf``)."""
    hf = config_keys(config, _HF_KEYS[config.model_type])
    if config.model_type == "bert":
        if config.embedding_size != config.hidden_size:
            raise ConfigError(f"embedding_size {config.embedding_size} != hidden_size "
                              f"{config.hidden_size} has no transformers BERT equivalent")
        hf.pop("embedding_size", None)
    if config.model_type == "distilbert":
        hf["sinusoidal_pos_embds"] = False
    return hf


_SEQUENCE, _TOKEN = "ForSequenceClassification", "ForTokenClassification"
# Which of the table's alternative names each model type writes (zoo.hf.export).
EXPORTS = {
    "bert": HFExport("Bert", "bert.", in_base=r"pooler\.",
                     never=r"transformer\.|pre_classifier|classifier\.(dense|out_proj)|vocab_"),
    "electra": HFExport("Electra", "electra.", never=r"transformer\.|pre_classifier|pooler\.",
                        never_for={_SEQUENCE: r"classifier\.(weight|bias)",
                                   _TOKEN: r"classifier\.(dense|out_proj)"}),
    "distilbert": HFExport("DistilBert", "distilbert.",
                           never=r"encoder\.|pooler\.|classifier\.(dense|out_proj)|cls\."),
}

ARCHITECTURE = Architecture(
    name="bert", model_types={"bert": "bert-custom", "electra": "electra-custom",
                              "distilbert": "distilbert-custom"},
    config_class=BertConfig, config_from_hf=lambda hf, where: config_from_hf(hf, where=where),
    table=TABLE, finish=lambda params, config: resolve_decoder(params, STAGED_BIAS,
                                                                "cls.predictions.bias"), config_to_hf=config_to_hf, exports=EXPORTS)
FAMILY = make_family(ARCHITECTURE)
