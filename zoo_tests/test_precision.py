"""``--precision bf16``: bfloat16 compute, float32 parameters; numerics close to float32."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.extend.core import subjaxprs

import zoo

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


# ----------------------------------------------------------------- float32 accumulation


# (spec, operand shapes): every product of the families, odd sizes included.
PRODUCTS = [
    ("ay,yz->az", (12, 8), (8, 6)),             # Linear
    ("ay,yz->az", (7, 5), (5, 3)),              # odd sizes: no axis to split
    ("bhqd,bhkd->bhqk", (2, 3, 5, 4), (2, 3, 6, 4)),   # attention scores
    ("bhqk,bhkd->bhqd", (2, 3, 5, 6), (2, 3, 6, 4)),   # attention context
    ("bhqd,hrd->bhqr", (2, 3, 5, 4), (3, 7, 4)),       # DeBERTa c2p
    ("hrd,bhkd->bhrk", (3, 7, 4), (2, 3, 5, 4)),       # DeBERTa p2c
]


@pytest.mark.parametrize("spec,shape_a,shape_b", PRODUCTS)
def test_low_precision_einsum_is_the_float32_product_of_its_operands(spec, shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in (shape_a, shape_b))
    reference = jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))
    out, vjp = jax.vjp(lambda x, y: zoo.nn.einsum(spec, x, y, out_dtype=jnp.float32), a, b)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference), rtol=1e-5, atol=1e-5)
    assert zoo.nn.einsum(spec, a, b).dtype == jnp.bfloat16
    g = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    g16 = g.astype(jnp.bfloat16).astype(jnp.float32)  # the gradient is taken in bf16
    _, ref_vjp = jax.vjp(lambda x, y: jnp.einsum(spec, x, y), a.astype(jnp.float32),
                         b.astype(jnp.float32))
    for grad, ref in zip(vjp(g), ref_vjp(g16)):
        assert grad.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(ref),
                                   rtol=1e-2, atol=1e-2)  # one bf16 rounding of a float32 sum


def _products(jaxpr) -> list:
    found = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general"]
    for sub in subjaxprs(jaxpr):
        found += _products(sub)
    return found


def test_bf16_products_accumulate_in_float32_with_the_left_operand_contracted_last():
    """What XLA's CPU backend runs on bf16 matrix units (else it converts to float32): every
    matmul of a bf16 train step takes bf16 operands, gives float32, and contracts the left
    operand over its last axes -- the Linear weight gradient included."""
    model = _build("bert-custom")
    set_precision(model, "bf16")
    model.train()
    batch = _batch(model.config.vocab_size)
    graph, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        logits = nnx.merge(graph, p, rest)(batch["input_ids"], batch["attention_mask"],
                                           rngs=nnx.Rngs(dropout=0))
        return logits.astype(jnp.float32).sum()

    products = _products(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    assert len(products) >= 3 * 6 * TINY_BERT.num_layers  # forward and both gradients
    for eqn in products:
        lhs, rhs = (v.aval for v in eqn.invars)
        (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
        if lhs.shape[-1] == 2 or rhs.shape[-1] == 2:  # the 2-class head's product
            continue
        assert (lhs.dtype, rhs.dtype) == (jnp.bfloat16, jnp.bfloat16), eqn
        assert eqn.params["preferred_element_type"] == jnp.float32, eqn
        assert tuple(lhs_contract) == tuple(range(lhs.ndim - len(lhs_contract), lhs.ndim)), eqn


def test_load_predict_and_encode_follow_the_precision():
    """``zoo.load(..., precision="bf16")``: bf16 outputs close to float32's; a cached forward
    is rebuilt when the precision changes (back to float32: float32's outputs exactly)."""
    import zoo_tests.bert_reference as br

    texts = ["a gripping, beautifully acted film", "dull and far too long", "it is a movie"]
    folder = br.minilm_folder()
    full = zoo.load("all-minilm-l6-v2", weights=folder)
    half = zoo.load("all-minilm-l6-v2", weights=folder, precision="bf16")
    reference = full.encode(texts)
    vectors = half.encode(texts)
    assert (vectors * reference).sum(-1).min() > 0.999 and not np.allclose(vectors, reference)
    set_precision(half, "float32")
    np.testing.assert_array_equal(half.encode(texts), reference)
    set_precision(half, "bf16")
    assert not np.allclose(half.encode(texts), reference)

    with pytest.warns(zoo.HeadInitializedWarning):
        classifier = zoo.load("all-minilm-l6-v2", weights=folder, head="classifier")

    def probabilities():
        return np.array([list(p.probabilities.values()) for p in classifier.predict(texts)])

    reference = probabilities()
    set_precision(classifier, "bf16")
    low = probabilities()
    assert not np.array_equal(low, reference)
    np.testing.assert_allclose(low, reference, atol=0.02)
    # Parameters replaced after the first call (training, nnx.update) are seen: the bf16
    # copies cast once are cast again.
    last = [m for _, m in nnx.iter_modules(classifier.head) if isinstance(m, nnx.Linear)][-1]
    kernel = last.kernel.get_value()
    last.kernel.set_value(jnp.zeros_like(kernel))
    flat = probabilities()
    np.testing.assert_allclose(flat, np.broadcast_to(flat[0], flat.shape), atol=1e-6)
    assert not np.allclose(flat, low, atol=1e-3)
    last.kernel.set_value(kernel)
    set_precision(classifier, "float32")
    np.testing.assert_array_equal(probabilities(), reference)
    with pytest.raises(InvalidArgumentError, match="precision must be one of float32, bf16"):
        zoo.load("all-minilm-l6-v2", weights=folder, precision="fp16")


def _dots_on_ynnpack(compiled: str) -> tuple[int, int]:
    """(dots inside YNNPACK fusions, dots elsewhere) of a compiled CPU program's HLO text."""
    import re

    bodies = {m.group(1): m.group(2) for m in
              re.finditer(r"^(?:ENTRY )?%(\S+) \(.*?\{\n(.*?)^\}", compiled, re.M | re.S)}
    ynn = {m.group(1) for m in re.finditer(r"calls=%([\w.\-]+).*__ynn_fusion", compiled)}
    inside = sum(bodies[name].count(" dot(") for name in ynn)
    return inside, sum(b.count(" dot(") for b in bodies.values()) - inside


def test_cpu_programs_choose_eigen_dots_for_wide_float32_models(monkeypatch):
    """``zoo.nn.compiler_options``: YNNPACK's float32 dots are slower than Eigen's on the
    CPU from width 768 (its reductions are not: they stay), its bf16 ones are the only ones
    on AMX; the environment and XLA_FLAGS decide first."""
    from zoo.inference import _forward
    from zoo.nn import CPU_DOTS_ENV, compiler_options, model_width

    monkeypatch.delenv(CPU_DOTS_ENV, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    wide = dataclasses.replace(TINY_BERT, hidden_size=768, num_heads=4, intermediate_size=768,
                               num_layers=1)
    model = build_model("bert-custom", "sst2", seed=0, config=wide)
    narrow = _build("bert-custom")  # 32 wide: YNNPACK is as fast there
    assert model_width(model) == 768 and model_width(narrow) == 32
    minilm = build_model("bert-custom", "sst2", seed=0, config=dataclasses.replace(
        wide, hidden_size=384, intermediate_size=1536))  # all-MiniLM-L6-v2's widths
    assert model_width(minilm) == 384 and compiler_options(minilm) == {}
    off = {"xla_cpu_experimental_ynn_fusion_type":
           "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
    assert compiler_options(model) == off and compiler_options(narrow) == {}
    # the compiled float32 forward runs its dots outside YNNPACK and its reductions inside,
    # and gives XLA's default's outputs
    forward, cast = _forward(model)
    batch = _batch(wide.vocab_size)
    args = (cast(), batch["input_ids"], batch["attention_mask"])
    compiled = forward.lower(*args).compile().as_text()
    inside, outside = _dots_on_ynnpack(compiled)
    assert inside == 0 and outside >= 6 and "__ynn_fusion" in compiled
    monkeypatch.setenv(CPU_DOTS_ENV, "xla")
    assert compiler_options(model) == {}
    default = jax.jit(forward.__wrapped__)  # XLA's own choice
    inside, outside = _dots_on_ynnpack(default.lower(*args).compile().as_text())
    assert inside >= 6  # the parser finds YNNPACK's dots when they are there
    np.testing.assert_allclose(np.asarray(forward(*args)), np.asarray(default(*args)),
                               atol=1e-5)
    monkeypatch.setenv(CPU_DOTS_ENV, "Eigen")
    assert compiler_options(model) == off and compiler_options(narrow) == off
    monkeypatch.setenv(CPU_DOTS_ENV, "auto")
    set_precision(model, "bf16")
    assert compiler_options(model) == {}
    monkeypatch.setenv(CPU_DOTS_ENV, "eigen")
    assert compiler_options(model) == off
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=invalid")
    assert compiler_options(model) == {}  # the user's own choice stands
    monkeypatch.setenv(CPU_DOTS_ENV, "mkl")
    with pytest.raises(InvalidArgumentError, match="ZOO_XLA_CPU_DOTS='mkl': expected one of "
                       "auto, eigen, xla"):
        compiler_options(model)
