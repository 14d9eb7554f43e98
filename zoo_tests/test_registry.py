"""Every registered encoder x head builds, has the documented call contract, and jits.

Parametrised over the registry: a model is tested by being registered.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
from zoo.tasks import get_task

ENCODERS = zoo.list_models()
HEADS = zoo.list_heads()


def _batch(vocab: int, length: int = 12):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(3, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # padding
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    return jnp.asarray(ids), jnp.asarray(mask)


LARGE = 30_000_000  # presets above this many parameters are run at a test size


def _parameters(encoder: str, config=None) -> int:
    abstract = nnx.eval_shape(lambda: zoo.get_encoder(encoder).build(nnx.Rngs(0), config))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_size_config(config):
    """The same architecture and options at a size that runs in a test: 2 layers, at most
    2,048 vocabulary rows (per-layer fields such as ModernBERT's ``layer_types`` cut too)."""
    import dataclasses

    changes = {"num_layers": min(config.num_layers, 2),
               "vocab_size": min(config.vocab_size, 2048)}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, tuple) and len(value) == config.num_layers:
            changes[field.name] = value[:changes["num_layers"]]
    return dataclasses.replace(config, **changes)


test_size_config.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("encoder", ENCODERS)
def test_shape_only_build_is_the_same_model(encoder):
    """``zoo.model.abstract_encoder``'s fast shape-only keys build the very graph and
    parameter shapes an ordinary ``nnx.Rngs`` does (no stream is kept in the module)."""
    from zoo.model import abstract_encoder

    spec = zoo.get_encoder(encoder)
    plain = nnx.eval_shape(lambda: spec.build(nnx.Rngs(params=0)))
    fast = abstract_encoder(encoder)
    graph, state = nnx.split(fast)
    assert graph == nnx.split(plain)[0]
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), nnx.state(plain))


@functools.cache
def _model(encoder: str) -> zoo.ZooModel:
    """Each preset is initialised once per session; presets above ``LARGE`` parameters
    (BERT-base, XLM-R's 250k vocabulary, ModernBERT-large...) at ``test_size_config`` of their own config
    (their full size is built abstractly in ``test_every_preset_builds_at_full_size``)."""
    config = zoo.get_encoder(encoder).config
    if _parameters(encoder) > LARGE:
        config = test_size_config(config)
    return zoo.build_model(encoder, "sst2", seed=0, config=config)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_preset_builds_at_full_size(encoder):
    """Shape-only at the preset's own size: every parameter is float32 and the encoder's
    word-embedding table has the preset's vocabulary and width."""
    spec = zoo.get_encoder(encoder)
    abstract = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert leaves and all(x.dtype == jnp.float32 for x in leaves)
    table = abstract.token_embeddings().get_value()
    assert table.shape[0] == spec.config.vocab_size
    assert _parameters(encoder) > spec.config.vocab_size * table.shape[1]


@functools.cache
def _hidden(encoder: str):
    model = _model(encoder)
    ids, mask = _batch(model.config.vocab_size)
    return model.encoder(ids, mask)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_forward_and_jit(encoder):
    """The call contract: (B, S) ids and mask -> (B, S, hidden) float32, same under jit."""
    model = _model(encoder)
    config = model.config
    ids, mask = _batch(config.vocab_size)
    hidden = _hidden(encoder)
    assert hidden.shape == (3, 12, config.hidden_size) and hidden.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(hidden)))
    logits = model(ids, mask)
    jitted = nnx.jit(lambda m, i, a: m(i, a))(model, ids, mask)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(logits), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_token_embeddings_is_the_lookup_table(encoder):
    """``encoder.token_embeddings()`` (what embedding transfer writes) is the table the
    forward pass reads: changing one token's row changes only the rows holding that token."""
    model = _model(encoder)
    table = model.encoder.token_embeddings()
    assert isinstance(table, nnx.Param) and table[...].shape[0] == model.config.vocab_size
    ids, mask = _batch(model.config.vocab_size)
    token = int(ids[0, 1])
    holds = np.asarray(jnp.any((ids == token) & (mask > 0), axis=1))
    before = np.asarray(_hidden(encoder))
    saved = table[...]
    try:
        # not a constant shift: a LayerNorm over the embedding would remove it
        table[...] = saved.at[token].add(jnp.linspace(-1.0, 1.0, saved.shape[1]))
        after = np.asarray(model.encoder(ids, mask))
    finally:
        table[...] = saved
    changed = np.abs(after - before).reshape(3, -1).max(1) > 1e-4
    assert changed[0] and list(changed) == list(holds)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_head_fits_every_encoder(encoder, head):
    """Heads are architecture-neutral: each registered head reads each encoder's output."""
    config = _model(encoder).config
    head_module = zoo.model.build_head(head, config, num_classes=None, seed=0)
    head_module.eval()
    _, mask = _batch(config.vocab_size)
    out = head_module(_hidden(encoder), attention_mask=mask)
    spec = zoo.get_head(head)
    expected = get_task(spec.kind).output_shape(3, 12, config, spec.num_classes)
    assert out.shape == expected and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_eval_by_default_and_dropout_needs_rngs(encoder):
    model = _model(encoder)
    ids, mask = _batch(model.config.vocab_size)
    np.testing.assert_array_equal(model(ids, mask), model(ids, mask))  # eval: deterministic
    if not any(getattr(m, "rate", 0) for _, m in model.iter_modules()):
        # A preset trained without dropout (ModernBERT): training mode changes nothing.
        model.train()
        try:
            np.testing.assert_array_equal(model(ids, mask), model(ids, mask, rngs=nnx.Rngs(1)))
        finally:
            model.eval()
        return
    model.train()
    try:
        with pytest.raises(ValueError, match="rngs"):
            model(ids, mask)
        a = model(ids, mask, rngs=nnx.Rngs(dropout=0))
        b = model(ids, mask, rngs=nnx.Rngs(dropout=1))
    finally:
        model.eval()
    assert not np.allclose(a, b)  # dropout is active and keyed by the RNG


def test_padding_does_not_change_real_tokens():
    """Key-padding mask: extra padding leaves the logits of real sequences unchanged."""
    model = zoo.build_model("encoder-m2l-tiny", "sst2", seed=0)
    ids, mask = _batch(model.config.vocab_size, 8)
    padded_ids = jnp.pad(ids, ((0, 0), (0, 8)))
    padded_mask = jnp.pad(mask, ((0, 0), (0, 8)))
    np.testing.assert_allclose(model(ids, mask), model(padded_ids, padded_mask), atol=1e-5)


def test_classifier_num_classes():
    model = zoo.build_model("encoder-m2l-tiny", "classifier", num_classes=5)
    ids, mask = _batch(model.config.vocab_size)
    assert model(ids, mask).shape == (3, 5)
    assert model.info.labels == tuple(f"class_{i}" for i in range(5))
    assert zoo.build_model("encoder-m2l-tiny", "sst2").info.labels == ("negative", "positive")


def test_list_with_wildcards():
    assert "encoder-mlm-v1" in zoo.list_models()
    assert zoo.list_models("*v1") == ["encoder-mlm-v1"]
    assert zoo.list_models(pretrained=True) == sorted([
        "encoder-mlm-v1", "bert-tiny", "bert-mini", "bert-small", "bert-base-uncased",
        "minilm-l12-h384", "all-minilm-l6-v2", "electra-small", "distilbert-sst2",
        "multilingual-e5-small", "roberta-base", "distilroberta-base", "xlm-roberta-base",
        "deberta-v3-xsmall", "deberta-v3-small", "deberta-v3-base", "modernbert-base",
        "modernbert-large"])
    assert zoo.list_models("*-custom") == [
        "bert-custom", "deberta-v2-custom", "distilbert-custom", "electra-custom",
        "modernbert-custom", "roberta-custom", "xlm-roberta-custom"]
    assert zoo.list_models("bert-*") == ["bert-base-uncased", "bert-custom", "bert-mini",
                                         "bert-small", "bert-tiny"]
    assert zoo.list_heads("s*") == ["sst2"]


def test_unknown_names_suggest_close_ones():
    with pytest.raises(KeyError, match="encoder-m2l-tiny"):
        zoo.load("encoder-m2l-tyni")
    with pytest.raises(KeyError, match="sst2"):
        zoo.build_model("encoder-m2l-tiny", "sst")


def test_v1_sizes():
    """The published architecture: the parameter counts of the design note."""
    mlm = nnx.eval_shape(lambda: zoo.build_model("encoder-mlm-v1", "mlm"))
    cls = nnx.eval_shape(lambda: zoo.build_model("encoder-mlm-v1", "sst2"))
    count = lambda m: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert count(mlm) == 7_236_648
    assert count(cls) == 4_011_906
    assert count(mlm.encoder) == 3_994_880
    assert mlm.config.positional == "none"


def test_sequence_longer_than_max_len_is_refused():
    model = zoo.build_model("encoder-m2l-tiny", "sst2")
    n = model.config.max_len + 1
    with pytest.raises(ValueError, match="max_len"):
        model(jnp.ones((1, n), jnp.int32), jnp.ones((1, n), jnp.int32))
