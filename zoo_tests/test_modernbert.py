"""The ModernBERT family: config, config.json reading (4.x and 5.x spellings), the encoder's
attention windows, rotary positions and padding, and golden outputs of transformers.

The golden folders (``zoo_tests/golden/modernbert-*``) are tiny checkpoints written by
transformers 5.25 (``python -m benchmarks.parity.modernbert golden zoo_tests/golden``) with
its outputs on eight sentences; no torch here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
import zoo.models.modernbert  # noqa: F401  (registers the family)
from zoo.errors import ConfigError
from zoo.models.modernbert.convert import config_from_hf
from zoo.models.modernbert.modeling import (GLOBAL, LOCAL, ModernBertConfig, ModernBertEncoder,
                                            rotary_tables, rotate)
from zoo.registry import get_encoder

GOLDEN = Path(__file__).parent / "golden"
TASKS = ("base", "classifier", "regressor", "token", "mlm")

# answerdotai/ModernBERT-base's config.json as published (transformers 4.48).
HUB_BASE = {
    "architectures": ["ModernBertForMaskedLM"], "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 50281, "classifier_activation": "gelu",
    "classifier_bias": False, "classifier_dropout": 0.0, "classifier_pooling": "mean",
    "cls_token_id": 50281, "decoder_bias": True, "deterministic_flash_attn": False,
    "embedding_dropout": 0.0, "eos_token_id": 50282, "global_attn_every_n_layers": 3,
    "global_rope_theta": 160000.0, "gradient_checkpointing": False,
    "hidden_activation": "gelu", "hidden_size": 768, "initializer_cutoff_factor": 2.0,
    "initializer_range": 0.02, "intermediate_size": 1152, "layer_norm_eps": 1e-05,
    "local_attention": 128, "local_rope_theta": 10000.0, "max_position_embeddings": 8192,
    "mlp_bias": False, "mlp_dropout": 0.0, "model_type": "modernbert", "norm_bias": False,
    "norm_eps": 1e-05, "num_attention_heads": 12, "num_hidden_layers": 22,
    "pad_token_id": 50283, "position_embedding_type": "absolute", "reference_compile": True,
    "repad_logits_with_grad": False, "sep_token_id": 50282, "sparse_pred_ignore_index": -100,
    "sparse_prediction": False, "torch_dtype": "float32", "transformers_version": "4.48.0.dev0",
    "vocab_size": 50368,
}


def as_5x(hub: dict) -> dict:
    """The same config as transformers 5's save_pretrained writes it."""
    out = {k: v for k, v in hub.items() if k not in (
        "global_rope_theta", "local_rope_theta", "torch_dtype", "layer_norm_eps",
        "reference_compile", "repad_logits_with_grad", "gradient_checkpointing",
        "position_embedding_type")}
    every, layers = hub["global_attn_every_n_layers"], hub["num_hidden_layers"]
    out["layer_types"] = [GLOBAL if i % every == 0 else LOCAL for i in range(layers)]
    out["rope_parameters"] = {
        GLOBAL: {"rope_theta": hub["global_rope_theta"], "rope_type": "default"},
        LOCAL: {"rope_theta": hub["local_rope_theta"], "rope_type": "default"}}
    out["dtype"] = "float32"
    out["transformers_version"] = "5.25.0"
    return out


def tiny(**options) -> ModernBertConfig:
    values = dict(vocab_size=64, hidden_size=16, num_layers=3, num_heads=2,
                  intermediate_size=24, local_attention=4, global_rope_theta=1000.0,
                  local_rope_theta=100.0)
    return ModernBertConfig(**{**values, **options})


def build(config: ModernBertConfig, seed: int = 0) -> ModernBertEncoder:
    """An encoder whose weights are large enough (N(0, 0.3)) for attention to be far from
    uniform, so that positions and windows show in the outputs."""
    encoder = ModernBertEncoder(config, rngs=nnx.Rngs(seed))
    encoder.eval()
    flat = nnx.to_flat_state(nnx.state(encoder, nnx.Param))
    rng = np.random.default_rng(seed)
    for path, var in flat:
        if path[-1] in ("kernel", "embedding"):
            var.set_value(jnp.asarray(0.3 * rng.standard_normal(var.shape), jnp.float32))
    nnx.update(encoder, nnx.from_flat_state(flat))
    return encoder


@nnx.jit
def run(encoder, ids, mask):
    return encoder(ids, mask)


def batch(rows: list[list[int]], length: int | None = None):
    length = length or max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    return jnp.asarray(ids), jnp.asarray(mask)


# ---------------------------------------------------------------------------- config


def test_config_round_trips_through_json():
    config = tiny(layer_types=[LOCAL, GLOBAL, LOCAL], norm_bias=True, classifier_pooling="mean",
                  max_len=100)
    back = ModernBertConfig(**json.loads(json.dumps(config.to_dict())))
    assert back == config and isinstance(back.layer_types, tuple)
    assert tiny().layer_types == (GLOBAL, LOCAL, LOCAL)  # every third layer, from 0
    assert tiny().max_len == 8192
    assert tiny().global_attn_every_n_layers == 3
    assert tiny(layer_types=[LOCAL, GLOBAL, LOCAL]).global_attn_every_n_layers is None


def test_config_properties_read_by_the_heads():
    config = tiny(classifier_activation="silu", classifier_bias=True, classifier_pooling="mean")
    assert config.classifier_style == config.token_classifier_style == "silu-norm"
    assert config.mlm_activation == "silu"
    assert config.head_bias is True and config.norm_bias is False
    assert config.classifier_pooling == "mean" and config.type_vocab_size == 0


@pytest.mark.parametrize("options, field", [
    ({"hidden_size": 15}, "hidden_size"),
    ({"num_heads": 4, "hidden_size": 12}, "head size"),
    ({"num_layers": 0}, "num_layers"),
    ({"local_attention": 0}, "local_attention"),
    ({"hidden_act": "xielu"}, "hidden_act"),
    ({"classifier_activation": "xielu"}, "classifier_activation"),
    ({"classifier_pooling": "max"}, "classifier_pooling"),
    ({"layer_types": [GLOBAL, LOCAL]}, "layer_types"),
    ({"layer_types": [GLOBAL, "chunked_attention", LOCAL]}, "layer_types"),
    ({"layer_types": "full_attention"}, "layer_types"),
    ({"global_rope_theta": 0.0}, "global_rope_theta"),
    ({"dropout": 1.0}, "dropout"),
    ({"norm_bias": 1}, "norm_bias"),
    ({"type_vocab_size": 2}, "type_vocab_size"),
    ({"max_len": 9000}, "max_len"),
    ({"model_type": "bert"}, "model_type"),
])
def test_config_validation_names_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        tiny(**options)


def test_presets_have_the_published_shapes():
    base, large = get_encoder("modernbert-base"), get_encoder("modernbert-large")
    assert base.source.repo_id == "answerdotai/ModernBERT-base"
    assert large.source.repo_id == "answerdotai/ModernBERT-large"
    assert get_encoder("modernbert-custom").source is None
    count = lambda spec: zoo.nn.count_params(nnx.eval_shape(  # noqa: E731
        lambda: spec.build(nnx.Rngs(0))))
    assert count(base) == 149_014_272  # "149M" (the model card)
    assert count(large) == 394_781_696  # "395M"


# ---------------------------------------------------------------------------- config.json


def test_config_from_hub_4x_and_5x_files_gives_the_preset():
    preset = get_encoder("modernbert-base").config
    assert config_from_hf(HUB_BASE, "config.json") == preset
    assert config_from_hf(as_5x(HUB_BASE), "config.json") == preset
    large = {**HUB_BASE, "hidden_size": 1024, "num_hidden_layers": 28,
             "num_attention_heads": 16, "intermediate_size": 2624}
    assert config_from_hf(large, "c") == get_encoder("modernbert-large").config
    assert config_from_hf(as_5x(large), "c") == get_encoder("modernbert-large").config


def test_config_from_hf_reads_every_option():
    hf = {**as_5x(HUB_BASE), "num_hidden_layers": 4, "local_attention": 64,
          "layer_types": [LOCAL, GLOBAL, GLOBAL, LOCAL],
          "rope_parameters": {GLOBAL: {"rope_theta": 5e5, "rope_type": "default"},
                              LOCAL: {"rope_theta": 123.0, "rope_type": "default"}},
          "global_attn_every_n_layers": 3,  # 5.x files may keep it: layer_types wins
          "norm_eps": 1e-6, "norm_bias": True, "attention_bias": True, "mlp_bias": True,
          "classifier_bias": True, "decoder_bias": False, "classifier_pooling": "cls",
          "hidden_activation": "gelu_pytorch_tanh", "classifier_activation": "swish",
          "embedding_dropout": 0.1, "mlp_dropout": 0.2, "attention_dropout": 0.3,
          "classifier_dropout": 0.4, "max_position_embeddings": 512}
    config = config_from_hf(hf, "c")
    assert config.layer_types == (LOCAL, GLOBAL, GLOBAL, LOCAL)
    assert (config.global_rope_theta, config.local_rope_theta) == (5e5, 123.0)
    assert (config.layer_norm_eps, config.norm_bias, config.attention_bias, config.mlp_bias,
            config.classifier_bias, config.decoder_bias) == (1e-6, True, True, True, True, False)
    # gelu_pytorch_tanh and swish are the same functions as gelu_new and silu
    assert (config.hidden_act, config.classifier_activation) == ("gelu_new", "silu")
    assert (config.embedding_dropout, config.dropout, config.attention_dropout,
            config.classifier_dropout) == (0.1, 0.2, 0.3, 0.4)
    assert config.local_attention == 64 and config.max_len == 512
    four = {**HUB_BASE, "num_hidden_layers": 5, "global_attn_every_n_layers": 2}
    assert config_from_hf(four, "c").layer_types == (GLOBAL, LOCAL, GLOBAL, LOCAL, GLOBAL)
    defaults = {k: HUB_BASE[k] for k in ("model_type", "vocab_size", "hidden_size",
                                         "num_hidden_layers", "num_attention_heads",
                                         "intermediate_size")}
    config = config_from_hf(defaults, "c")  # transformers' defaults for the rest
    assert (config.global_rope_theta, config.local_rope_theta, config.local_attention,
            config.classifier_pooling, config.layer_norm_eps) == (160000.0, 10000.0, 128,
                                                                  "cls", 1e-5)


@pytest.mark.parametrize("change, message", [
    ({"rope_parameters": {GLOBAL: {"rope_theta": 1e4, "rope_type": "yarn", "factor": 2.0},
                          LOCAL: {"rope_theta": 1e4, "rope_type": "default"}}},
     r"rope_parameters\['full_attention'\].rope_type 'yarn' is not supported"),
    ({"rope_parameters": {GLOBAL: {"rope_theta": 1e4, "factor": 2.0}}},
     r"rope_parameters\['full_attention'\] \{'factor': 2.0\} is not supported"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling .* is not supported"),
    ({"hidden_activation": "xielu"}, "hidden_activation 'xielu' is not supported"),
    ({"classifier_activation": "xielu"}, "classifier_activation 'xielu' is not supported"),
    ({"classifier_pooling": "max"}, "classifier_pooling 'max' is not supported"),
    ({"head_dim": 32}, "head_dim 32 is not supported"),
    # checked before any arithmetic: {} * heads was a TypeError, "x" * 10**12 a MemoryError
    ({"head_dim": {}}, "head_dim {} is not supported"),
    ({"head_dim": "x", "num_attention_heads": 10**12}, "head_dim 'x' is not supported"),
    # 4.x spelling: the layer pattern of 10**12 layers was built before the size was checked
    ({"layer_types": None, "num_hidden_layers": 10**12}, "num_layers must be at most 1024"),
    ({"layer_types": [GLOBAL] * 21 + ["chunked_attention"]}, "layer_types .* not supported"),
    ({"layer_types": [GLOBAL] * 3}, "layer_types has 3 entries"),
    ({"local_attention": 0}, "local_attention"),
    ({"num_hidden_layers": None}, "missing num_hidden_layers"),
    ({"model_type": "bert"}, "model_type 'bert'"),
])
def test_config_from_hf_refuses_what_is_not_implemented(change, message):
    with pytest.raises(ConfigError, match=f"^where.json: {message}"):
        config_from_hf({**as_5x(HUB_BASE), **change}, "where.json")


def test_config_from_hf_missing_keys_are_named():
    hf = {k: v for k, v in HUB_BASE.items() if k not in ("hidden_size", "vocab_size")}
    with pytest.raises(ConfigError, match="missing vocab_size, hidden_size"):
        config_from_hf(hf, "c")


# ---------------------------------------------------------------------------- the encoder


def numpy_forward(encoder: ModernBertEncoder, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An independent float64 forward of the encoder's parameters (transformers' eager
    attention, whose fully masked rows are zeroed as its SDPA path gives)."""
    from math import erf

    config = encoder.config
    p = {"/".join(map(str, k)): np.asarray(v.get_value(), np.float64)
         for k, v in nnx.to_flat_state(nnx.state(encoder, nnx.Param))}
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + config.layer_norm_eps) * p[f"{name}/scale"]
        return y + p.get(f"{name}/bias", 0.0)

    def linear(x, name):
        return x @ p[f"{name}/kernel"] + p.get(f"{name}/bias", 0.0)

    batch, length = ids.shape
    heads, d = config.num_heads, config.hidden_size // config.num_heads
    x = norm(p["embeddings/word/embedding"][ids], "embeddings/norm")
    pos = np.arange(length)
    for i, kind in enumerate(config.layer_types):
        theta = config.global_rope_theta if kind == GLOBAL else config.local_rope_theta
        angles = pos[:, None] / theta ** (np.arange(0, d, 2) / d)[None]
        cos, sin = np.cos(np.tile(angles, 2)), np.sin(np.tile(angles, 2))
        h = x if i == 0 else norm(x, f"layers/{i}/attention_norm")
        qkv = linear(h, f"layers/{i}/attention/qkv").reshape(batch, length, 3, heads, d)
        q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
        half = lambda t: np.concatenate([-t[..., d // 2:], t[..., :d // 2]], -1)  # noqa: E731
        q, k = q * cos + half(q) * sin, k * cos + half(k) * sin
        allowed = np.broadcast_to(mask[:, None, None, :] > 0, (batch, 1, length, length))
        if kind == LOCAL:
            allowed = allowed & (np.abs(pos[:, None] - pos[None]) <= config.local_attention // 2)
        scores = np.where(allowed, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d), -1e300)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        context = (weights / weights.sum(-1, keepdims=True)) @ v
        context = np.where(allowed.any(-1, keepdims=True), context, 0.0)
        x = x + linear(context.transpose(0, 2, 1, 3).reshape(batch, length, -1),
                       f"layers/{i}/attention/output")
        inner = linear(norm(x, f"layers/{i}/mlp_norm"), f"layers/{i}/mlp/intermediate")
        gated = gelu(inner[..., :config.intermediate_size]) * inner[..., config.intermediate_size:]
        x = x + linear(gated, f"layers/{i}/mlp/output")
    return norm(x, "final_norm")


@pytest.mark.parametrize("options", [
    {},
    {"layer_types": [LOCAL, GLOBAL, LOCAL], "norm_bias": True, "attention_bias": True,
     "mlp_bias": True, "local_attention": 5},
])
def test_forward_against_an_independent_numpy_forward(options):
    encoder = build(tiny(**options))
    ids, mask = batch([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13]], length=12)
    got = np.asarray(run(encoder, ids, mask))
    assert got.shape == (2, 12, 16) and got.dtype == np.float32
    want = numpy_forward(encoder, np.asarray(ids), np.asarray(mask))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_eager_equals_jit_and_no_token_types():
    encoder = build(tiny(num_layers=1))
    ids, mask = batch([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]])
    np.testing.assert_allclose(np.asarray(encoder(ids, mask)),
                               np.asarray(run(encoder, ids, mask)), atol=1e-5)
    assert encoder.token_embeddings().shape == (64, 16)
    with pytest.raises(ValueError, match="no token types"):
        encoder(ids, mask, jnp.zeros_like(ids))


def test_a_row_does_not_change_when_other_rows_are_longer():
    encoder = build(tiny(num_layers=3))  # global, local, local
    rows = [[3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]]
    alone = np.asarray(run(encoder, *batch(rows[:1])))[0]
    together = np.asarray(run(encoder, *batch(rows, length=20)))
    np.testing.assert_allclose(together[0, :4], alone, atol=1e-5)
    assert np.isfinite(together).all()


def test_padding_beyond_every_window_gets_no_attention():
    # local layers only: a padded position farther than the reach from every real token sees
    # no key; its attention output is 0 (as transformers' SDPA gives), so all such positions
    # of a row end up equal, and finite
    encoder = build(tiny(num_layers=2, layer_types=[LOCAL, LOCAL]))
    out = np.asarray(run(encoder, *batch([[3, 4, 5, 6], [7] * 12], length=12)))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 7:], out[0, 7:8].repeat(5, 0), atol=1e-6)
    assert np.abs(out[0, 4] - out[0, 7]).max() > 1e-3  # within reach: attends to real keys


def one_layer(kind: str, window: int = 4) -> ModernBertEncoder:
    return build(tiny(num_layers=1, layer_types=[kind], local_attention=window))


@pytest.mark.parametrize("window", [4, 5, 8])
def test_a_local_layer_sees_keys_within_half_its_window(window):
    encoder = one_layer(LOCAL, window)
    ids, mask = batch([list(range(1, 13))])
    base = np.asarray(run(encoder, ids, mask))[0, 0]
    reach = window // 2  # |i - j| <= local_attention // 2, as transformers' mask
    inside = np.asarray(run(encoder, ids.at[0, reach].set(40), mask))[0, 0]
    outside = np.asarray(run(encoder, ids.at[0, reach + 1].set(40), mask))[0, 0]
    assert np.abs(inside - base).max() > 1e-3
    np.testing.assert_allclose(outside, base, atol=1e-6)
    glob = one_layer(GLOBAL, window)
    far = np.asarray(run(glob, ids.at[0, 11].set(40), mask))[0, 0]
    assert np.abs(far - np.asarray(run(glob, ids, mask))[0, 0]).max() > 1e-3


def test_local_equals_global_within_the_window_with_one_rotary_base():
    # same weights (same seed), same base: a sequence shorter than the reach is unaffected
    same = dict(num_layers=1, local_attention=16, global_rope_theta=500.0,
                local_rope_theta=500.0)
    local = build(tiny(layer_types=[LOCAL], **same))
    glob = build(tiny(layer_types=[GLOBAL], **same))
    ids, mask = batch([[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 6, 7]])
    np.testing.assert_allclose(np.asarray(run(local, ids, mask)),
                               np.asarray(run(glob, ids, mask)), atol=1e-5)
    # each layer kind reads its own rotary base
    other = build(tiny(layer_types=[LOCAL], **{**same, "local_rope_theta": 50.0}))
    mixed = build(tiny(layer_types=[LOCAL], **{**same, "global_rope_theta": 50.0}))
    assert np.abs(np.asarray(run(other, ids, mask))
                  - np.asarray(run(local, ids, mask))).max() > 1e-3
    np.testing.assert_allclose(np.asarray(run(mixed, ids, mask)),
                               np.asarray(run(local, ids, mask)), atol=1e-6)


def test_rotary_embedding_is_rotate_half_and_relative():
    d, theta = 8, 1000.0
    cos, sin = rotary_tables(6, d, theta)
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    angles = np.arange(6)[:, None] * np.concatenate([inv, inv])[None]
    np.testing.assert_allclose(np.asarray(cos), np.cos(angles[:, :d // 2]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(sin), np.sin(angles[:, :d // 2]), atol=1e-6)
    x = np.random.default_rng(0).normal(size=(6, d)).astype(np.float32)
    want = x * np.cos(angles) + np.concatenate([-x[:, d // 2:], x[:, :d // 2]], -1) \
        * np.sin(angles)
    np.testing.assert_allclose(np.asarray(rotate(jnp.asarray(x), cos, sin)), want, atol=1e-5)
    # q.k after rotation depends on the offset only
    q, k = x[0], x[1]
    dots = [float(rotate(jnp.asarray(q)[None], cos[i:i + 1], sin[i:i + 1])[0]
                  @ rotate(jnp.asarray(k)[None], cos[i + 2:i + 3], sin[i + 2:i + 3])[0])
            for i in range(4)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-5)


def test_dropout_in_training_mode_and_bf16():
    config = tiny(num_layers=1, embedding_dropout=0.1, dropout=0.2, attention_dropout=0.3)
    layer = build(config).layers[0]
    assert build(config).embeddings.dropout.rate == 0.1 and layer.mlp.dropout.rate == 0.2
    assert layer.attention.dropout.rate == layer.attention.output_dropout.rate == 0.3
    encoder = build(tiny(num_layers=1, dropout=0.1))  # one dropout site: a quick compile
    ids, mask = batch([[1, 2, 3, 4, 5, 6], [7, 8, 9]])
    clean = np.asarray(run(encoder, ids, mask))
    encoder.train()
    noisy = np.asarray(nnx.jit(lambda m, i, a, r: m(i, a, rngs=r))(encoder, ids, mask,
                                                                  nnx.Rngs(dropout=1)))
    assert np.abs(noisy - clean).max() > 1e-3
    encoder.eval()
    zoo.nn.set_precision(encoder, "bf16")
    low = np.asarray(run(encoder, ids, mask))
    assert 0 < np.abs(low - clean).max() < 0.1 * np.abs(clean).max() and np.isfinite(low).all()


def test_the_residual_gradient_is_stored_once_per_block(monkeypatch):
    """``zoo.nn.stored_gradient`` at each block changes no gradient, and on the CPU puts each
    block's residual cotangent behind a conditional, so that no fusion of the backward
    recomputes the later blocks' LayerNorm gradients (ModernBERT-base: 1,061 operations)."""
    from zoo.models.modernbert import modeling

    encoder = build(tiny(num_layers=2))
    ids, mask = batch([[1, 2, 3, 4, 5, 6], [7, 8, 9]])
    graph, params = nnx.split(encoder)

    def gradient():  # a fresh jit: traced with the current modeling.stored_gradient
        return jax.jit(jax.grad(lambda p: (nnx.merge(graph, p)(ids, mask) ** 2).sum()))

    stored = gradient()
    hlo = stored.lower(params).compile().as_text()
    monkeypatch.setattr(modeling, "stored_gradient", lambda x: x)
    plain = gradient()
    assert hlo.count(" conditional(") == 2 > plain.lower(params).compile().as_text().count(
        " conditional(")
    for a, b in zip(jax.tree.leaves(stored(params)), jax.tree.leaves(plain(params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_partition_rules_name_real_parameters():
    import re

    config = tiny(attention_bias=True, mlp_bias=True)
    paths = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(
        nnx.state(build(config), nnx.Param))]
    for pattern, axes in ModernBertConfig.partition_rules:
        hits = [p for p in paths if re.search(pattern, p)]
        assert hits, pattern
    assert "layers/0/attention_norm/scale" not in paths  # layer 0 reads the embeddings' norm
    assert "layers/1/attention_norm/scale" in paths
    assert not any(p.endswith("norm/bias") for p in paths)  # norm_bias false


# ---------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("task", TASKS)
def test_golden_outputs_of_transformers(task):
    folder = GOLDEN / f"modernbert-{task}"
    if not (folder / "expected.npz").is_file():
        pytest.skip(f"no golden files in {folder}")
    with np.load(folder / "expected.npz") as data:
        expected = {k: data[k] for k in data.files}
    model = zoo.load(str(folder))
    assert model.info.encoder == "modernbert-custom"
    assert model.info.head == {"base": None, "classifier": "classifier", "regressor":
                               "regressor", "token": "token-classifier", "mlm": "mlm"}[task]
    ids, mask = expected["input_ids"], expected["attention_mask"]
    rows = [e.ids for e in model.tokenizer.encode_batch([str(s) for s in
                                                         expected["sentences"]])]
    assert rows == [list(r[m == 1]) for r, m in zip(ids, mask)]  # the tokenizer too
    out = np.asarray(jax.jit(lambda i, m: model(i, m))(ids, mask))
    if "positions" in expected:
        out = out[expected["positions"][:, 0], expected["positions"][:, 1]]
    assert out.shape == expected["output"].shape
    np.testing.assert_allclose(out, expected["output"], rtol=0, atol=1e-5)


def test_golden_tokenizer_keeps_specials_at_the_end():
    folder = GOLDEN / "modernbert-base"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("no golden files")
    from zoo.hf import read_tokenizer
    from zoo.text import special_ids

    tokenizer = read_tokenizer(folder)
    size = tokenizer.get_vocab_size()
    ids = special_ids(tokenizer)
    assert sorted(ids.values()) == list(range(size - 5, size))
    assert tokenizer.token_to_id("<|padding|>") == 1 and ids["pad"] != 1
    encoded = tokenizer.encode("good", "bad").ids
    assert encoded[0] == ids["cls"] and encoded.count(ids["sep"]) == 2
    assert tokenizer.encode("the [MASK] end").ids.count(ids["mask"]) == 1


def test_golden_configs_use_both_spellings():
    if not (GOLDEN / "modernbert-base" / "config.json").is_file():
        pytest.skip("no golden files")
    old = json.loads((GOLDEN / "modernbert-base" / "config.json").read_text())
    new = json.loads((GOLDEN / "modernbert-token" / "config.json").read_text())
    assert "global_rope_theta" in old and "layer_types" not in old
    assert "rope_parameters" in new and new["layer_types"] == [LOCAL, GLOBAL]
    assert dataclasses.replace(config_from_hf(new, "c")).layer_types == (LOCAL, GLOBAL)
