"""The DeBERTa-v2 family (DeBERTa-v3): config, the HF config reader, the encoder's shapes and
invariances, relative-position indices, and the golden transformers checkpoints.

Golden folders (``zoo_tests/golden/deberta-v2-*``) are tiny transformers checkpoints written
by ``benchmarks/parity/deberta_v2.py write_golden`` with transformers' outputs on fixed
sentences; here they are loaded with ``zoo.load`` alone (no torch).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
import zoo.models.deberta_v2  # noqa: F401  (registers the family)
from zoo.errors import ConfigError
from zoo.models.deberta_v2 import DebertaV2Config, DebertaV2Encoder, config_from_hf
from zoo.models.deberta_v2.convert import ARCHITECTURE, finish
from zoo.models.deberta_v2.modeling import log_bucket_position, relative_indices
from zoo.registry import get_encoder

GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_FOLDERS = sorted(GOLDEN.glob("deberta-v2-*"))

# microsoft/deberta-v3-xsmall's config.json as the hub has it (transformers 4.x).
HUB_XSMALL = {
    "model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 384, "initializer_range": 0.02,
    "intermediate_size": 1536, "max_position_embeddings": 512, "relative_attention": True,
    "position_buckets": 256, "norm_rel_ebd": "layer_norm", "share_att_key": True,
    "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7, "max_relative_positions": -1,
    "position_biased_input": False, "num_attention_heads": 6, "num_hidden_layers": 12,
    "type_vocab_size": 0, "vocab_size": 128100,
}
# The same as transformers 5.x save_pretrained writes it.
SAVED_5X = {
    **{k: v for k, v in HUB_XSMALL.items() if k != "pos_att_type"},
    "pos_att_type": ["p2c", "c2p"], "dtype": "float32", "architectures": ["DebertaV2Model"],
    "pooler_dropout": 0.0, "pooler_hidden_act": "gelu", "pooler_hidden_size": 384,
    "legacy": True, "tie_word_embeddings": True, "pad_token_id": 0, "bos_token_id": None,
    "eos_token_id": None, "transformers_version": "5.25.0",
}

V3 = dict(relative_attention=True, position_buckets=8, max_relative_positions=-1,
          pos_att_type=("c2p", "p2c"), share_att_key=True, norm_rel_ebd="layer_norm",
          position_biased_input=False, type_vocab_size=0)
V2 = dict(relative_attention=True, position_buckets=-1, max_relative_positions=6,
          pos_att_type=("p2c",), share_att_key=False, position_biased_input=True,
          type_vocab_size=2)
ABSOLUTE = dict(relative_attention=False, position_biased_input=True, embedding_size=8,
                pos_att_type=("c2p", "p2c"))
# DeBERTa-v2-xlarge's ConvLayer after the first block (grouped here)
CONV = dict(V3, conv_kernel_size=3, conv_groups=2, conv_act="gelu")
KINDS = {"v3": V3, "v2": V2, "absolute": ABSOLUTE, "conv": CONV}


def tiny(kind: str = "v3", **changes) -> DebertaV2Config:
    return DebertaV2Config(**{**dict(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                                     intermediate_size=32, max_position_embeddings=32),
                              **KINDS[kind], **changes})


def encoder(config: DebertaV2Config, seed: int = 0) -> DebertaV2Encoder:
    model = DebertaV2Encoder(config, rngs=nnx.Rngs(seed))
    # LayerNorms and biases away from 1 / 0 so that a misplaced one shows
    rng = np.random.default_rng(seed)
    for path, param in nnx.iter_graph(model):
        if isinstance(param, nnx.Param) and path[-1] in ("scale", "bias"):
            noise = rng.normal(size=param.value.shape).astype(np.float32)
            param.value = param.value + 0.3 * noise
    model.eval()
    return model


@nnx.jit
def forward(model, *inputs):
    """``model(*inputs)``, compiled (much faster than eager for a new shape)."""
    return model(*inputs)


@pytest.fixture(scope="module")
def models():
    return {kind: encoder(tiny(kind)) for kind in KINDS}


def batch(seed: int = 0, lengths=(9, 4, 12), vocab: int = 50):
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = rng.integers(4, vocab, (len(lengths), width)).astype(np.int32)
    mask = (np.arange(width)[None] < np.array(lengths)[:, None]).astype(np.int32)
    return jnp.asarray(ids * mask), jnp.asarray(mask)


# ------------------------------------------------------------------------------ config


def test_config_round_trips_through_json():
    for kind in KINDS:
        config = tiny(kind)
        assert DebertaV2Config(**config.to_dict()) == config
        assert DebertaV2Config(**json.loads(json.dumps(config.to_dict()))) == config
    preset = get_encoder("deberta-v3-base").config
    assert DebertaV2Config(**json.loads(json.dumps(preset.to_dict()))) == preset


def test_config_defaults_and_normalisation():
    config = tiny("v3", pos_att_type="p2c|c2p")
    assert config.pos_att_type == ("c2p", "p2c")  # canonical order, from the old string form
    assert tiny("v3", pos_att_type=["p2c", "c2p"]) == config
    assert tiny("v3", pos_att_type=None).pos_att_type == ()
    assert config.embedding_size == 16 and config.max_len == 32
    assert config.attention_span == 8 and config.max_relative == 32
    v2 = tiny("v2")
    assert v2.attention_span == 6 and v2.max_relative == 6
    # relative positions alone do not bound the length
    assert tiny("v3", max_len=100).max_len == 100


@pytest.mark.parametrize("changes, field", [
    (dict(hidden_size=15), "hidden_size"),
    (dict(num_layers=0), "num_layers"),
    (dict(hidden_act="xielu"), "hidden_act"),
    (dict(pooler_hidden_act="xielu"), "pooler_hidden_act"),
    (dict(pos_att_type=("c2p", "p2p")), "pos_att_type"),
    (dict(pos_att_type=("c2p", "c2p")), "pos_att_type"),
    (dict(norm_rel_ebd="batch_norm"), "norm_rel_ebd"),
    (dict(dropout=1.0), "dropout"),
    (dict(type_vocab_size=-1), "type_vocab_size"),
    (dict(max_len=1), "max_len"),
    (dict(share_att_key="yes"), "share_att_key"),
    (dict(model_type="deberta"), "model_type"),
    (dict(embedding_size=0), "embedding_size"),
    (dict(conv_kernel_size=4), "conv_kernel_size must be odd"),
    (dict(conv_kernel_size=-1), "conv_kernel_size"),
    (dict(conv_kernel_size=3, conv_groups=3), "conv_groups 3 does not divide"),
    (dict(conv_groups=0), "conv_groups"),
    (dict(conv_act="xielu"), "conv_act"),
])
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        tiny("v3", **changes)
    with pytest.raises(ValueError, match="max_len"):
        tiny("v2", max_len=33)  # learned positions bound it


def test_heads_read_the_style_properties():
    config = tiny("v3")
    assert (config.classifier_style, config.classifier_pooling, config.head_bias,
            config.norm_bias, config.token_classifier_style, config.mlm_activation) == \
        ("gelu", "cls", True, True, None, "gelu")
    assert tiny("v3", pooler_hidden_act="tanh").classifier_style == "tanh"
    assert tiny("v3", hidden_act="gelu_pytorch_tanh").mlm_activation == "gelu_new"


# ------------------------------------------------------------------------------ config.json


def test_hub_config_reads_as_the_preset():
    for hf in (HUB_XSMALL, SAVED_5X):
        assert config_from_hf(hf, "config.json") == get_encoder("deberta-v3-xsmall").config
    small = config_from_hf({**HUB_XSMALL, "hidden_size": 768, "num_attention_heads": 12,
                            "intermediate_size": 3072, "num_hidden_layers": 6}, "c")
    assert small == get_encoder("deberta-v3-small").config


def test_config_from_hf_defaults_are_transformers_defaults():
    config = config_from_hf({"model_type": "deberta-v2", "vocab_size": 10, "hidden_size": 8,
                             "num_hidden_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 16, "cls_dropout": 0.3,
                             "norm_rel_ebd": "layer_norm|none"}, "c")
    assert (config.relative_attention, config.position_biased_input, config.pos_att_type,
            config.share_att_key, config.position_buckets, config.type_vocab_size,
            config.layer_norm_eps, config.classifier_dropout, config.norm_rel_ebd) == \
        (False, True, (), False, -1, 0, 1e-7, 0.3, "layer_norm")
    for spelling in ("none", "None|c2p"):  # old configs' "none" adds no attention type
        config = config_from_hf({"model_type": "deberta-v2", "vocab_size": 10, "hidden_size": 8,
                                 "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "intermediate_size": 16, "pos_att_type": spelling}, "c")
        assert config.pos_att_type == (() if spelling == "none" else ("c2p",))


@pytest.mark.parametrize("changes, words", [
    ({"conv_kernel_size": 2}, "conv_kernel_size must be odd"),
    ({"conv_kernel_size": 3, "conv_groups": 5}, "conv_groups 5 does not divide hidden_size"),
    ({"conv_act": "xielu"}, "conv_act 'xielu' is not supported"),
    ({"pooler_hidden_size": 128}, "pooler_hidden_size 128 is not supported"),
    ({"attention_head_size": 32}, "attention_head_size 32 is not supported"),
    # checked before any arithmetic: {} * heads was a TypeError, "x" * 10**12 a MemoryError
    ({"attention_head_size": {}}, "attention_head_size {} is not supported"),
    ({"attention_head_size": "x", "num_attention_heads": 10**12},
     "attention_head_size 'x' is not supported"),
    ({"hidden_act": "xielu"}, "hidden_act 'xielu' is not supported"),
    ({"pooler_hidden_act": "softmax"}, "pooler_hidden_act 'softmax' is not supported"),
    ({"pos_att_type": "p2c|p2p"}, "pos_att_type 'p2c|p2p' is not supported"),
    ({"norm_rel_ebd": "batch_norm"}, "norm_rel_ebd 'batch_norm' is not supported"),
    ({"model_type": "deberta"}, "model_type 'deberta'"),
    ({"hidden_size": 100}, "hidden_size=100 is not divisible"),
    ({"hidden_size": "64", "pooler_hidden_size": 64},
     "hidden_size must be a positive integer, got '64'"),
    ({"embedding_size": 128, "architectures": ["DebertaV2ForMaskedLM"]},
     "the legacy masked-LM head with embedding_size 128 other than hidden_size"),
])
def test_config_from_hf_refuses_what_is_not_implemented(changes, words):
    with pytest.raises(ConfigError, match=f"^where: .*{words.replace('|', '.')}"):
        config_from_hf({**HUB_XSMALL, **changes}, "where")


def test_config_from_hf_names_missing_keys():
    hf = {k: v for k, v in HUB_XSMALL.items() if k not in ("vocab_size", "num_hidden_layers")}
    with pytest.raises(ConfigError, match="missing vocab_size, num_hidden_layers"):
        config_from_hf(hf, "where")
    assert ARCHITECTURE.model_types == {"deberta-v2": "deberta-v2-custom"}


def test_finish_resolves_biases_and_drops_unused_positions():
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    params = {"encoder/embeddings/word/embedding": emb,
              "encoder/embeddings/position/embedding": np.zeros((8, 3), np.float32),
              "heads/mlm/predictions_bias": np.ones(4, np.float32)}
    notes = finish(params, tiny("v3"))
    assert sorted(params) == ["encoder/embeddings/word/embedding", "heads/mlm/decoder/bias",
                              "heads/mlm/decoder/kernel"]
    np.testing.assert_array_equal(params["heads/mlm/decoder/kernel"], emb.T)
    assert len(notes) == 1 and "position_embeddings" in notes[0]
    untied = {"encoder/embeddings/word/embedding": emb,
              "heads/mlm/decoder/bias": np.zeros(4, np.float32),
              "heads/mlm/decoder/kernel": np.ones((3, 4), np.float32),
              "heads/mlm/predictions_bias": np.ones(4, np.float32),
              "encoder/embeddings/position/embedding": np.zeros((8, 3), np.float32)}
    finish(untied, tiny("v2"))  # position_biased_input: the table stays
    assert "heads/mlm/predictions_bias" not in untied
    np.testing.assert_array_equal(untied["heads/mlm/decoder/bias"], 0)
    np.testing.assert_array_equal(untied["heads/mlm/decoder/kernel"], 1)
    assert "encoder/embeddings/position/embedding" in untied


# ------------------------------------------------------------------------------ positions


def test_log_buckets_match_transformers():
    # values from transformers' make_log_bucket_position
    rel = np.array([0, 5, -5, 127, 128, 129, -129, 200, 300, 511, 600, 1000, -1000])
    assert log_bucket_position(rel, 256, 512).tolist() == \
        [0, 5, -5, 127, 128, 129, -129, 169, 207, 255, 270, 317, -317]
    rel = np.array([0, 3, 4, 5, -5, 7, 8, 20, 63, 100, -100])
    assert log_bucket_position(rel, 8, 64).tolist() == [0, 3, 4, 5, -5, 5, 5, 6, 7, 8, -8]


def test_relative_indices_are_the_clamped_buckets():
    c2p, p2c, lo, hi = relative_indices(40, 8, 32, 8)
    rel = log_bucket_position(np.arange(40)[:, None] - np.arange(40)[None], 8, 32)
    np.testing.assert_array_equal(c2p + lo, np.clip(rel + 8, 0, 15))
    np.testing.assert_array_equal(p2c + lo, np.clip(-rel.T + 8, 0, 15))
    assert (lo, hi) == (0, 16)
    _, _, lo, hi = relative_indices(5, 256, 512, 256)  # short input: 9 rows of 512 read
    assert (lo, hi) == (252, 261)
    c2p, _, lo, _ = relative_indices(30, -1, 6, 6)  # no buckets: distances clamped
    assert c2p[0, 29] + lo == 0 and c2p[29, 0] + lo == 11


# ------------------------------------------------------------------------------ the encoder


@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_shapes_and_parameters(models, kind):
    model = models[kind]
    ids, mask = batch()
    inputs = (ids, mask)
    if model.config.type_vocab_size >= 2:
        inputs += (jnp.asarray(np.asarray(mask) * (np.arange(12) > 3)),)
    out = forward(model, *inputs)
    assert out.shape == (3, 12, 16) and bool(jnp.isfinite(out).all())
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    has = {n for n in ("embeddings/position/embedding", "embeddings/token_type/embedding",
                       "embeddings/projection/kernel", "rel_embeddings/embedding",
                       "rel_norm/scale", "layers/0/attention/pos_key/kernel",
                       "layers/0/attention/pos_query/kernel", "conv/kernel") if n in names}
    assert has == {
        "v3": {"rel_embeddings/embedding", "rel_norm/scale"},
        "v2": {"embeddings/position/embedding", "embeddings/token_type/embedding",
               "rel_embeddings/embedding", "layers/0/attention/pos_query/kernel"},
        "absolute": {"embeddings/position/embedding", "embeddings/projection/kernel"},
        "conv": {"rel_embeddings/embedding", "rel_norm/scale", "conv/kernel"},
    }[kind]
    assert "embeddings/projection/bias" not in names


@pytest.mark.parametrize("kind", list(KINDS))
def test_padding_invariance(models, kind):
    """A row's outputs at its real tokens do not depend on how long the other rows are."""
    ids, mask = batch(lengths=(9, 4, 12))
    longer = np.asarray(forward(models[kind], ids, mask))
    shorter = np.asarray(forward(models[kind], ids[:2, :9], mask[:2, :9]))
    for row, length in enumerate((9, 4)):
        np.testing.assert_allclose(longer[row, :length], shorter[row, :length],
                                   atol=2e-5, rtol=1e-5)


def test_long_inputs_need_learned_positions(models):
    """(Every other test runs the encoder under ``jit``: golden outputs check its numbers.)"""
    model = models["v3"]
    ids, mask = batch(lengths=(9, 4, 12))
    long_ids = jnp.ones((1, 40), jnp.int32)  # beyond max_position_embeddings 32: fine
    assert forward(model, long_ids, jnp.ones_like(long_ids)).shape == (1, 40, 16)
    with pytest.raises(ValueError, match="exceeds the model's 32 positions"):
        models["v2"](long_ids, jnp.ones_like(long_ids))
    with pytest.raises(ValueError, match="no token types"):
        model(ids, mask, jnp.zeros_like(ids))


@pytest.mark.parametrize("kernel, groups, act", [(3, 1, "gelu"), (5, 4, "tanh"), (1, 2, "relu")])
def test_conv_layer_is_a_zero_padded_grouped_conv1d(kernel, groups, act):
    """The ConvLayer's shifted-windows product against lax's convolution (NWC, grouped),
    then the mask, activation, residual LayerNorm and mask as transformers' ConvLayer."""
    config = tiny("conv", conv_kernel_size=kernel, conv_groups=groups, conv_act=act)
    layer = encoder(config).conv
    rng = np.random.default_rng(kernel)
    ids, mask = batch(lengths=(9, 4, 12))
    maskf = np.asarray(mask, np.float32)[..., None]
    x = rng.normal(size=(3, 12, 16)).astype(np.float32) * maskf  # embeddings are masked
    residual = rng.normal(size=(3, 12, 16)).astype(np.float32)
    pad = (kernel - 1) // 2
    conv = jax.lax.conv_general_dilated(
        jnp.asarray(x), layer.kernel[...], window_strides=(1,), padding=[(pad, pad)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups,
        precision=jax.lax.Precision.HIGHEST)
    out = zoo.nn.ACTIVATIONS[act]((np.asarray(conv) + np.asarray(layer.bias[...])) * maskf)
    y = residual + np.asarray(out)
    mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
    expected = ((y - mean) / np.sqrt(var + config.layer_norm_eps)
                * np.asarray(layer.norm.scale[...]) + np.asarray(layer.norm.bias[...])) * maskf
    got = np.asarray(layer(jnp.asarray(x), jnp.asarray(residual), mask))
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)
    assert np.all(got[1, 4:] == 0)
    zoo.nn.set_precision(layer, "bf16")
    try:
        assert layer.dtype == jnp.bfloat16
        low = np.asarray(layer(jnp.asarray(x), jnp.asarray(residual), mask))
    finally:
        zoo.nn.set_precision(layer, "float32")
    assert 0 < np.abs(low - got).max() < 0.1


@pytest.mark.parametrize("layers", [1, 2])
def test_first_token_only_with_the_conv_layer(layers):
    """The convolution after block 0 reads every position: with one block, that block runs
    in full and position 0 is sliced after the convolution."""
    model = encoder(tiny("conv", num_layers=layers))
    ids, mask = batch()
    full = np.asarray(forward(model, ids, mask))
    first = nnx.jit(lambda m, i, a: m(i, a, first_token_only=True))(model, ids, mask)
    assert first.shape == (3, 1, 16)
    np.testing.assert_allclose(np.asarray(first), full[:, :1], atol=2e-5, rtol=1e-5)


def test_separate_position_projections_and_c2p_alone():
    """share_att_key false with c2p only: a pos_key projection and no pos_query."""
    model = encoder(tiny("v3", share_att_key=False, pos_att_type=("c2p",)))
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert "layers/1/attention/pos_key/kernel" in names
    assert not any("pos_query" in n for n in names)
    ids, mask = batch()
    assert bool(jnp.isfinite(forward(model, ids, mask)).all())


def test_training_mode_and_bf16(models):
    model = models["v3"]  # relative embeddings have their own dropout
    ids, mask = batch()

    @nnx.jit
    def train_forward(m, i, a, key):
        return m(i, a, rngs=nnx.Rngs(dropout=key))

    model.train()
    a = train_forward(model, ids, mask, jax.random.PRNGKey(1))
    b = train_forward(model, ids, mask, jax.random.PRNGKey(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    model.eval()
    full = np.asarray(forward(model, ids, mask))
    zoo.nn.set_precision(model, "bf16")  # bf16 products (relative ones too), float32 rest
    try:
        out = forward(model, ids, mask)
    finally:
        zoo.nn.set_precision(model, "float32")
    assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
    assert 0 < np.abs(np.asarray(out) - full).max() < 0.1 * np.abs(full).max()


def test_presets_are_registered():
    assert zoo.list_models("deberta-*") == ["deberta-v2-custom", "deberta-v3-base",
                                            "deberta-v3-small", "deberta-v3-xsmall"]
    xsmall = get_encoder("deberta-v3-xsmall")
    assert xsmall.source.repo_id == "microsoft/deberta-v3-xsmall"
    assert dataclasses.replace(xsmall.config, num_layers=6, hidden_size=768, num_heads=12,
                               intermediate_size=3072, embedding_size=768) == \
        get_encoder("deberta-v3-small").config
    assert get_encoder("deberta-v2-custom").source is None


# ------------------------------------------------------------------------------ golden files


def _load(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zoo.load(str(folder))


@pytest.mark.skipif(not GOLDEN_FOLDERS, reason="no golden files")
@pytest.mark.parametrize("folder", GOLDEN_FOLDERS, ids=lambda p: p.name)
def test_golden_outputs_match_transformers(folder):
    expected = np.load(folder / "expected.npz")
    model = _load(folder)
    ids, mask = expected["input_ids"], expected["attention_mask"]
    args = [jnp.asarray(ids), jnp.asarray(mask)]
    if "token_type_ids" in expected:
        args.append(jnp.asarray(expected["token_type_ids"]))
    task = str(expected["task"])
    if task == "mlm":  # logits kept at a few positions only
        hidden = forward(model.encoder, *args)
        pos = expected["positions"]
        out = forward(model.head, hidden[pos[:, 0], pos[:, 1]])
    else:
        out = forward(model, *args)
    want = expected["output"]
    assert out.shape == want.shape
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5 * max(1.0, np.abs(want).max()),
                               rtol=0)
    head = {"base": None, "classifier": "classifier", "regressor": "regressor",
            "token": "token-classifier", "mlm": "mlm"}[task]
    assert model.info.head == head
    # the zoo's tokenizer gives transformers' ids
    sentences = [str(s) for s in expected["sentences"]]
    tokenizer = model.tokenizer
    if "token_type_ids" in expected:
        pairs = list(zip(sentences, sentences[1:] + sentences[:1]))
        encodings = tokenizer.encode_batch(pairs)
        for row, enc in enumerate(encodings):
            assert enc.type_ids == expected["token_type_ids"][row, :len(enc.ids)].tolist()
    else:
        encodings = tokenizer.encode_batch(sentences)
    for row, enc in enumerate(encodings):
        assert enc.ids == ids[row, :int(mask[row].sum())].tolist()


@pytest.mark.parametrize("buckets,max_relative,span,max_len", [
    (256, 512, 256, 512), (0, 64, 64, 64), (32, 128, 128, 300)])
def test_relative_rows_by_distance_equal_the_per_length_indices(buckets, max_relative, span,
                                                                max_len):
    """The symbolic-length path (ONNX export) gathers the rows the per-length path reads."""
    from zoo.models.deberta_v2.modeling import relative_indices, relative_rows

    c2p_rows, p2c_rows = relative_rows(max_len, buckets, max_relative, span)
    for length in (1, 2, 7, 64, min(max_len, 300)):
        c2p, p2c, lo, _ = relative_indices(length, buckets, max_relative, span)
        ids = np.arange(length)
        distance = ids[:, None] - ids[None, :] + max_len - 1
        np.testing.assert_array_equal(c2p_rows[distance], c2p + lo)
        np.testing.assert_array_equal(p2c_rows[distance], p2c + lo)
