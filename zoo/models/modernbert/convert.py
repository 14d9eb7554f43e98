"""ModernBERT checkpoints as the HF layer (``zoo.hf``) reads them: ``config.json`` ->
``ModernBertConfig``, and the name table HF -> zoo.

``config.json`` comes in two spellings, both read here:

- transformers 4.x (the published hub files): ``global_attn_every_n_layers``,
  ``global_rope_theta`` / ``local_rope_theta``, ``torch_dtype``, ``norm_eps`` and often a
  duplicate ``layer_norm_eps``;
- transformers 5.x ``save_pretrained``: ``layer_types`` (one per layer, ``full_attention`` /
  ``sliding_attention``) and ``rope_parameters`` (``{layer type: {"rope_type", "rope_theta"}}``),
  ``dtype``; ``global_attn_every_n_layers`` may still be there (``layer_types`` wins, as in
  transformers).

Options the modeling does not implement are refused (rotary scaling, a head size other than
hidden_size / num_heads, activations the zoo lacks); options that do not change inference
numerics are ignored (flash-attention determinism, ``reference_compile``, sparse MLM
prediction, gradient checkpointing).
"""

from __future__ import annotations

from typing import Any, Mapping

from zoo.errors import ConfigError
from zoo.hf import (Architecture, HFExport, NameTable, check_head_size, make_config,
                    resolve_decoder)
from zoo.models.modernbert.modeling import (ACTIVATIONS, GLOBAL, LAYER_TYPES, LOCAL, POOLINGS,
                                            ModernBertConfig, layer_pattern)
from zoo.nn import MAX_LAYERS

# HF activation names the zoo computes under another name (the same function).
_ALIASES = {"swish": "silu", "gelu_pytorch_tanh": "gelu_new"}
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size")
# config.json key -> ModernBertConfig field, copied when present (defaults are transformers').
_COPIED = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "norm_bias": "norm_bias", "attention_bias": "attention_bias", "mlp_bias": "mlp_bias",
    "local_attention": "local_attention", "embedding_dropout": "embedding_dropout",
    "mlp_dropout": "dropout", "attention_dropout": "attention_dropout",
    "classifier_dropout": "classifier_dropout", "classifier_pooling": "classifier_pooling",
    "classifier_bias": "classifier_bias", "decoder_bias": "decoder_bias",
}


def _unsupported(where: str, key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{where}: {key} {value!r} is not supported ({why})")


def _rope_thetas(hf: Mapping, where: str) -> dict[str, float]:
    """{layer type: rotary base} from 5.x ``rope_parameters`` or 4.x ``*_rope_theta``."""
    if hf.get("rope_scaling") is not None:
        raise _unsupported(where, "rope_scaling", hf["rope_scaling"],
                           "only the default rotary embedding is implemented")
    thetas = {GLOBAL: hf.get("global_rope_theta", 160_000.0),
              LOCAL: hf.get("local_rope_theta", 10_000.0)}
    params = hf.get("rope_parameters")
    if params is None:
        return thetas
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: rope_parameters must be an object, got {params!r}")
    if "rope_theta" in params or "rope_type" in params:  # one set for every layer type
        params = {kind: params for kind in LAYER_TYPES}
    unknown = sorted(set(params) - set(LAYER_TYPES))
    if unknown:
        raise _unsupported(where, "rope_parameters", {k: params[k] for k in unknown},
                           f"layer types are {' / '.join(LAYER_TYPES)}")
    for kind, values in params.items():
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: rope_parameters[{kind!r}] must be an object")
        rope_type = values.get("rope_type", values.get("type", "default"))
        if rope_type != "default":
            raise _unsupported(where, f"rope_parameters[{kind!r}].rope_type", rope_type,
                               "only the default rotary embedding is implemented")
        extra = sorted(set(values) - {"rope_type", "type", "rope_theta"})
        if extra:
            raise _unsupported(where, f"rope_parameters[{kind!r}]",
                               {k: values[k] for k in extra},
                               "only rope_type and rope_theta are implemented")
        if "rope_theta" in values:
            thetas[kind] = values["rope_theta"]
    return thetas


def _layer_types(hf: Mapping, where: str) -> tuple[str, ...]:
    layers = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise ConfigError(f"{where}: layer_types must be a list of names, got {types!r}")
        bad = sorted({t for t in types if t not in LAYER_TYPES})
        if bad:
            raise _unsupported(where, "layer_types", bad,
                               f"layer types are {' / '.join(LAYER_TYPES)}")
        return tuple(types)
    every = hf.get("global_attn_every_n_layers", 3)
    if not isinstance(layers, int) or not 0 < layers <= MAX_LAYERS:
        return ()  # ModernBertConfig names the bad num_layers (a pattern of 10**12 would hang)
    try:
        return layer_pattern(layers, every)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _activation(hf: Mapping, key: str, default: str, allowed, where: str) -> str:
    value = hf.get(key, default)
    if value is None:
        value = default
    name = _ALIASES.get(value, value) if isinstance(value, str) else value
    if not isinstance(name, str) or name not in allowed:
        raise _unsupported(where, key, value, f"supported: {', '.join(sorted(allowed))}")
    return name


def config_from_hf(hf: Mapping, where: str = "config.json") -> ModernBertConfig:
    """``ModernBertConfig`` from an HF ``config.json`` (4.x or 5.x spelling)."""
    if not isinstance(hf, Mapping):
        raise ConfigError(f"{where}: expected a JSON object")
    if hf.get("model_type") != "modernbert":
        raise ConfigError(f"{where}: model_type {hf.get('model_type')!r} is not 'modernbert'")
    missing = [key for key in _REQUIRED if hf.get(key) is None]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    check_head_size(hf, "head_dim", where)
    values: dict[str, Any] = {field: hf[key] for key, field in _COPIED.items()
                              if hf.get(key) is not None}
    eps = hf.get("norm_eps", hf.get("layer_norm_eps"))
    if eps is not None:
        values["layer_norm_eps"] = eps
    values["hidden_act"] = _activation(hf, "hidden_activation", "gelu", ACTIVATIONS, where)
    values["classifier_activation"] = _activation(hf, "classifier_activation", "gelu",
                                                  ACTIVATIONS, where)
    pooling = values.get("classifier_pooling", "cls")
    if pooling not in POOLINGS:
        raise _unsupported(where, "classifier_pooling", pooling,
                           f"supported: {', '.join(POOLINGS)}")
    thetas = _rope_thetas(hf, where)
    values["global_rope_theta"], values["local_rope_theta"] = thetas[GLOBAL], thetas[LOCAL]
    values["layer_types"] = _layer_types(hf, where)
    return make_config(ModernBertConfig, values, where)


# ------------------------------------------------------------------------------ the name table

_L = r"(?P<i>\d+)"
_W = {"weight": "scale", "bias": "bias"}  # LayerNorm parameter names
_LINEAR = {"weight": "kernel T", "bias": "bias"}


def _norm_rules(hf: str, zoo: str) -> tuple[tuple[str, str], ...]:
    return tuple((rf"{hf}\.{p}", f"{zoo}/{z}") for p, z in _W.items())


def _linear_rules(hf: str, zoo: str) -> tuple[tuple[str, str], ...]:
    return tuple((rf"{hf}\.{p}", f"{zoo}/{z}") for p, z in _LINEAR.items())


TABLE = NameTable(
    prefixes=("model.",),  # the encoder inside ModernBertFor* task models
    rules=(
        (r"embeddings\.tok_embeddings\.weight", "encoder/embeddings/word/embedding"),
        *_norm_rules(r"embeddings\.norm", "encoder/embeddings/norm"),
        *_norm_rules(rf"layers\.{_L}\.attn_norm", "encoder/layers/{i}/attention_norm"),
        *_linear_rules(rf"layers\.{_L}\.attn\.Wqkv", "encoder/layers/{i}/attention/qkv"),
        *_linear_rules(rf"layers\.{_L}\.attn\.Wo", "encoder/layers/{i}/attention/output"),
        *_norm_rules(rf"layers\.{_L}\.mlp_norm", "encoder/layers/{i}/mlp_norm"),
        *_linear_rules(rf"layers\.{_L}\.mlp\.Wi", "encoder/layers/{i}/mlp/intermediate"),
        *_linear_rules(rf"layers\.{_L}\.mlp\.Wo", "encoder/layers/{i}/mlp/output"),
        *_norm_rules(r"final_norm", "encoder/final_norm"),
        # ModernBertPredictionHead (dense -> act -> norm) of every task model: {cls} is the
        # head the checkpoint's task is stored as (classifier, regressor, token-classifier,
        # mlm)
        *_linear_rules(r"head\.dense", "heads/{cls}/dense"),
        *_norm_rules(r"head\.norm", "heads/{cls}/norm"),
        *_linear_rules(r"classifier", "heads/{cls}/classifier"),
        # the MLM decoder: its weight is tied to the token embeddings (absent from
        # safetensors files then; ``finish`` copies it), untied with tie_word_embeddings=false
        *_linear_rules(r"decoder", "heads/mlm/decoder"),
    ),
    ignored=(
        (r"rotary_emb\..*", "rotary buffer (recomputed)"),
        (r"layers\.\d+\.attn\.rotary_emb\..*", "rotary buffer (recomputed)"),
    ),
)


def finish(params: dict, config: ModernBertConfig | None = None) -> list[str]:
    """An MLM head whose decoder is tied to the token embeddings gets its own kernel (their
    transpose) when the file left the tied copy out (zoo.hf.resolve_decoder)."""
    return resolve_decoder(params)


def config_to_hf(config: ModernBertConfig) -> dict:
    """The ``config.json`` keys of ``config`` (the inverse of ``config_from_hf``), in
    transformers 5.x's spelling (``layer_types``, ``rope_parameters``) plus 4.x's
    (``global_rope_theta`` / ``local_rope_theta``, ``global_attn_every_n_layers`` when the
    layers follow its pattern), so that either version reads the same model."""
    hf = {key: getattr(config, field) for key, field in _COPIED.items()}
    layer_types = list(config.layer_types)
    hf |= {"norm_eps": config.layer_norm_eps, "hidden_activation": config.hidden_act,
           "classifier_activation": config.classifier_activation, "layer_types": layer_types,
           "rope_parameters": {GLOBAL: {"rope_type": "default",
                                        "rope_theta": config.global_rope_theta},
                               LOCAL: {"rope_type": "default",
                                       "rope_theta": config.local_rope_theta}},
           "global_rope_theta": config.global_rope_theta,
           "local_rope_theta": config.local_rope_theta}
    if config.global_attn_every_n_layers is not None:
        hf["global_attn_every_n_layers"] = config.global_attn_every_n_layers
    return hf


ARCHITECTURE = Architecture(
    name="modernbert",
    model_types={"modernbert": "modernbert-custom"},
    config_class=ModernBertConfig,
    config_from_hf=config_from_hf,
    table=TABLE,
    finish=finish,
    config_to_hf=config_to_hf,
    exports={"modernbert": HFExport("ModernBert", "model.", never=r"decoder\.")},
)
