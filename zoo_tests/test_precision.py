"""``--precision bf16``: bfloat16 compute, float32 parameters; numerics close to float32."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from zoo.errors import InvalidArgumentError
from zoo.model import build_model
from zoo.models.bert.modeling import BertConfig
from zoo.nn import set_precision
from zoo.tasks import task_for
from zoo.train import Steps, TrainConfig

MODELS = ["encoder-m2l-tiny", "bert-custom"]
# A small BERT-family config (bert-tiny's 30,522-word table makes every compile slow).
TINY_BERT = BertConfig(vocab_size=512, hidden_size=32, num_layers=2, num_heads=4,
                       intermediate_size=64, max_position_embeddings=64)


def _build(name):
    if name == "bert-custom":
        return build_model(name, "sst2", seed=0, config=TINY_BERT)
    return build_model(name, "sst2", seed=0)


def _batch(vocab: int, rows: int = 8, length: int = 16):
    rng = np.random.default_rng(0)
    mask = np.ones((rows, length), np.int32)
    mask[::2, length // 2:] = 0  # padded rows too
    return {"input_ids": rng.integers(5, min(vocab, 500), (rows, length)).astype(np.int32),
            "attention_mask": mask, "labels": rng.integers(0, 2, rows).astype(np.int32),
            "weights": np.ones(rows, np.float32)}


@pytest.mark.parametrize("name", MODELS)
def test_bf16_computes_in_bf16_and_stays_close_to_float32(name):
    model = _build(name)
    batch = _batch(model.config.vocab_size)
    args = (batch["input_ids"], batch["attention_mask"])
    forward = nnx.jit(lambda m, ids, mask: m(ids, mask))
    reference = np.asarray(forward(model, *args))
    set_precision(model, "bf16")
    jaxpr = str(jax.make_jaxpr(lambda ids, m: model(ids, m))(*args))
    assert "bf16" in jaxpr and "dot_general" in jaxpr
    logits = forward(model, *args)
    # Parameters are never converted: only the compute is.
    assert {np.dtype(p.dtype) for p in jax.tree.leaves(nnx.state(model, nnx.Param))} \
        == {np.dtype(np.float32)}
    np.testing.assert_allclose(np.asarray(logits, np.float32), reference, atol=0.08, rtol=0.05)
    assert not np.allclose(np.asarray(logits, np.float32), reference, atol=1e-6)  # it is bf16
    set_precision(model, "float32")
    np.testing.assert_allclose(np.asarray(forward(model, *args)), reference, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_bf16_train_step_keeps_float32_master_weights(name):
    model = _build(name)
    set_precision(model, "bf16")
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    steps = Steps(model, optimizer, task_for("classification"))
    dense = [path for path, _ in nnx.to_flat_state(steps.model_state)
             if "embed" not in "/".join(map(str, path))]  # rows of absent tokens do not move
    before = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(steps.model_state)
              if p in dense}
    batch = _batch(model.config.vocab_size)
    steps.model_state, steps.opt_state, _, loss = steps.train(
        steps.model_state, steps.opt_state, batch, jax.random.key(0))
    after = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(steps.model_state)}
    assert all(x.dtype == np.float32 for x in after.values())
    assert np.isfinite(float(loss)) and jnp.asarray(loss).dtype == jnp.float32
    # Updates smaller than a bf16 ulp of the weight survive in float32 master weights.
    moved = sum(int(np.count_nonzero(after[p] != b)) for p, b in before.items())
    assert moved > 0.5 * sum(b.size for b in before.values())


def test_precision_is_checked():
    with pytest.raises(InvalidArgumentError, match="--precision"):
        TrainConfig(precision="fp8").validated()
    with pytest.raises(ValueError, match="precision"):
        set_precision(build_model("encoder-m2l-tiny", "sst2"), "half")
