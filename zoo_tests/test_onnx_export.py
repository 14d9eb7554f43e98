"""zoo.onnx_export: an exported graph gives the model's own outputs, for any batch and length.

The graphs run in ``onnx.reference.ReferenceEvaluator`` (the onnx package's own NumPy
evaluator: the test environment has no onnxruntime) at two (batch, sequence) shapes with
padded rows, for every golden checkpoint on disk (real token ids from its expected.npz) and
for tiny BERT-family and M2L models built here (every head kind, the embedder included).
The converter is also tested on its own: symbolic dimension arithmetic, every gather form,
contractions, integer and float elementwise semantics, and what it refuses.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from flax import nnx
from jax import export, lax
from onnx.reference import ReferenceEvaluator

import zoo
from zoo.inference import uses_token_types
from zoo.model import ZooModel
from zoo.nn import in_training_mode
from zoo.onnx_export import _jaxpr_to_onnx, export_onnx

GOLDEN = Path(__file__).parent / "golden"
FOLDERS = sorted(p.name for p in GOLDEN.iterdir() if (p / "config.json").is_file())
SHAPES = ((2, 7), (3, 12))  # (batch, sequence): two shapes through one graph
TOLERANCE = 1e-4


def _tiny(encoder: str, **changes):
    return dataclasses.replace(zoo.get_encoder(encoder).config, **changes)


_BERT = dict(vocab_size=200, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
             max_position_embeddings=64, max_len=None, embedding_size=16)
BUILT = {  # BERT family (token types, ELECTRA's projection, DistilBERT) and M2L, every head
    "bert-sst2": lambda: zoo.build_model("bert-tiny", "sst2", config=_tiny("bert-tiny", **_BERT)),
    "minilm-embedder": lambda: zoo.build_model(
        "all-minilm-l6-v2", "embedder", config=_tiny("all-minilm-l6-v2", **_BERT)),
    "electra-token-classifier": lambda: zoo.build_model(
        "electra-small", "token-classifier", num_classes=4,
        config=_tiny("electra-small", **{**_BERT, "embedding_size": 8})),
    "distilbert-regressor": lambda: zoo.build_model(
        "distilbert-sst2", "regressor", config=_tiny("distilbert-sst2", **_BERT)),
    "m2l-classifier": lambda: zoo.build_model("encoder-m2l-tiny", "classifier"),
    "m2l-mlm": lambda: zoo.build_model("encoder-m2l-tiny", "mlm"),
    "m2l-unpositioned-embedder": lambda: zoo.build_model(
        "encoder-m2l-tiny", "embedder", config=_tiny("encoder-m2l-tiny", positional="none")),
    "m2l-unpositioned-bare": lambda: zoo.build_model(
        "encoder-m2l-tiny", None, config=_tiny("encoder-m2l-tiny", positional="none")),
}
CASES = [f"golden/{name}" for name in FOLDERS] + [f"built/{name}" for name in BUILT]


@dataclasses.dataclass
class Exported:
    model: ZooModel
    proto: onnx.ModelProto
    info: dict
    ids: np.ndarray | None  # real token ids (golden folders), else None
    mask: np.ndarray | None

    def forward(self, ids, mask, types):
        """The model's own output (jitted; the inputs as the zoo passes them: int32)."""
        if not hasattr(self, "_jitted"):
            graph, state = nnx.split(self.model)
            self._jitted = jax.jit(lambda i, m, t: nnx.merge(graph, state)(i, m, t))
        cast = lambda a: None if a is None else jnp.asarray(a, jnp.int32)  # noqa: E731
        return np.asarray(self._jitted(cast(ids), cast(mask), cast(types)))


@pytest.fixture(scope="module", params=CASES)
def exported(request, tmp_path_factory) -> Exported:
    kind, name = request.param.split("/")
    ids = mask = None
    if kind == "golden":
        model = zoo.load(str(GOLDEN / name))
        expected = np.load(GOLDEN / name / "expected.npz")
        ids, mask = expected["input_ids"], expected["attention_mask"]
    else:
        model = BUILT[name]()
    path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
    info = export_onnx(model, path)
    return Exported(model, onnx.load(str(path)), info, ids, mask)


def _batch(case: Exported, batch: int, length: int):
    """Padded (ids, mask, types or None), int64: real ids when the folder has them; row 1
    ends 3 tokens early, row 2 (if any) halfway."""
    config = case.model.config
    if case.ids is not None:
        ids, mask = case.ids[:batch, :length].astype(np.int64), case.mask[:batch, :length]
        mask = mask.astype(np.int64).copy()
    else:
        rng = np.random.default_rng(batch * 100 + length)
        ids = rng.integers(5, config.vocab_size, (batch, length))
        mask = np.ones((batch, length), np.int64)
    mask[1, length - 3:] = 0
    if batch > 2:
        mask[2, length // 2:] = 0
    ids = np.where(mask == 1, ids, getattr(config, "pad_token_id", 0))
    types = None
    if uses_token_types(config):
        types = np.zeros_like(ids)
        types[:, length // 2:] = 1
        types *= mask
    return ids, mask, types


def test_outputs_match_the_model(exported):
    """One graph, two shapes: max |ONNX - model| <= 1e-4 (about 1e-6 seen)."""
    session = ReferenceEvaluator(exported.proto)
    worst = 0.0
    for batch, length in SHAPES:
        ids, mask, types = _batch(exported, batch, length)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            feeds["token_type_ids"] = types
        (got,) = session.run(None, feeds)
        want = exported.forward(ids, mask, types)
        assert got.dtype == np.float32 and got.shape == want.shape
        worst = max(worst, float(np.max(np.abs(got - want))))
    print(f"max |diff| {worst:.2e}")
    assert worst <= TOLERANCE


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_interface(exported):
    """int64 inputs [batch, sequence] by name, one float32 output shaped as its head says,
    parameters as initializers named by their paths, nothing inlined in node attributes."""
    model, proto, info = exported.model, exported.proto, exported.info
    onnx.checker.check_model(proto, full_check=True)  # with strict shape inference
    names = ["input_ids", "attention_mask"] + (
        ["token_type_ids"] if uses_token_types(model.config) else [])
    assert [i.name for i in proto.graph.input] == info["inputs"] == names
    for graph_input in proto.graph.input:
        assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert _dims(graph_input) == ["batch", "sequence"]
        assert not any(d.HasField("dim_value") for d in graph_input.type.tensor_type.shape.dim)

    (output,) = proto.graph.output
    kind, config = model.info.head_kind, model.config
    hidden = config.hidden_size
    expected = {None: ("last_hidden_state", ["batch", "sequence", hidden]),
                "sentence-embedding": ("sentence_embedding", ["batch", hidden]),
                "classification": ("logits", ["batch", model.info.num_classes]),
                "multi-label-classification": ("logits", ["batch", model.info.num_classes]),
                "regression": ("logits", ["batch", 1]),
                "token-classification": ("logits", ["batch", "sequence", model.info.num_classes]),
                "mlm": ("logits", ["batch", "sequence", config.vocab_size])}[kind]
    assert (output.name, _dims(output)) == expected and info["output"] == output.name
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert info["opset"] == 17 and proto.opset_import[0].version == 17
    assert info["nodes"] == len(proto.graph.node)

    params = {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"):
              np.asarray(value)
              for path, value in jax.tree_util.tree_flatten_with_path(nnx.state(model))[0]}
    stored = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer
              if init.name in params}
    assert stored and info["parameters"] == sum(v.size for v in stored.values())
    assert info["parameters"] <= sum(v.size for v in params.values())
    for name, value in stored.items():
        assert value.dtype == np.float32 and np.array_equal(value, params[name]), name
    word = model.encoder.token_embeddings()[...]
    assert any(v.shape == word.shape and np.array_equal(v, word) for v in stored.values())
    assert not any(a.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.TENSORS)
                   for node in proto.graph.node for a in node.attribute)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["zoo.encoder"] == model.info.encoder
    assert meta["zoo.max_len"] == str(model.config.max_len)


# ---------------------------------------------------------------------------- the converter


def _run(fn, *arrays, constraints=("sequence <= 64", "sequence >= 4"), opset=17):
    """``fn`` traced with symbolic (batch, sequence) leading dims, converted, and run by the
    reference evaluator on ``arrays``; checked against jax's own ``fn(*arrays)``."""
    batch, length = export.symbolic_shape("batch, sequence", constraints=constraints)
    specs = [jax.ShapeDtypeStruct((batch, length, *a.shape[2:]), a.dtype) for a in arrays]
    closed = jax.make_jaxpr(fn)(*specs)
    n_out = len(closed.jaxpr.outvars)
    proto = _jaxpr_to_onnx(closed, inputs=[f"x{i}" for i in range(len(arrays))],
                           outputs=[f"y{i}" for i in range(n_out)], opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    feeds = {f"x{i}": a.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else a
             for i, a in enumerate(arrays)}
    got = ReferenceEvaluator(proto).run(None, feeds)
    want = fn(*arrays)
    for i, (g, w) in enumerate(zip(got, want if isinstance(want, tuple) else (want,))):
        w = np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (i, g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"output {i}")
    return proto


RNG = np.random.default_rng(0)


def test_symbolic_dimensions_become_graph_arithmetic():
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    proto = _run(lambda x: (x.reshape(-1), x[:, 1:], x + x.shape[1], jnp.arange(2 * x.shape[1]),
                            jnp.zeros((x.shape[0] * x.shape[1] // 2,)),
                            jnp.ones((x.shape[0] * x.shape[1] % 4, 2))), x)
    assert [_dims(o) for o in proto.graph.output][:2] == [["batch*sequence"],
                                                           ["batch", "sequence - 1"]]


def test_gathers_in_every_mode():
    table = RNG.standard_normal((7, 4)).astype(np.float32)
    ids = np.array([[0, 6, 7, -1, 3], [-8, 2, 9, 1, 1]], np.int32)  # out of range both ways
    _run(lambda i: (jnp.take(jnp.asarray(table), i, axis=0),  # fill: NaN rows, -1 wraps
                    jnp.take(jnp.asarray(table), i, axis=0, mode="clip"),
                    jnp.asarray(table)[i]), ids)  # promise_in_bounds: XLA clamps
    x = RNG.standard_normal((3, 5, 2, 6)).astype(np.float32)
    _run(lambda x: (x[:, :, 1], x[..., 2:], x[:, 0], x[0, :, 1, 5],
                    lax.dynamic_slice_in_dim(x, jnp.argmax(x[0, :, 0, 0]), 2, axis=1)), x)


def test_take_along_axis_as_deberta_uses_it():
    """(B, h, S, R) scores gathered by (S, S) relative indices along R, and transposed ones
    along S (DeBERTa's c2p / p2c): the batched gather, with a symbolic S."""
    def relative(x):
        q = jnp.arange(x.shape[2])
        index = jnp.clip(q[:, None] - q[None, :] + 3, 0, x.shape[3] - 1)
        c2p = jnp.take_along_axis(x, index[None, None], axis=-1, mode="promise_in_bounds")
        p2c = jnp.take_along_axis(jnp.swapaxes(x[..., :x.shape[2]], 2, 3), index.T[None, None],
                                  axis=-2, mode="promise_in_bounds")
        return c2p, p2c
    _run(lambda x: relative(jnp.swapaxes(x, 1, 2)),
         RNG.standard_normal((2, 5, 3, 8)).astype(np.float32))
    # batched, with part of another axis: out[b, j, :4] = x[b, index[b, j], :4]
    dimension_numbers = lax.GatherDimensionNumbers(
        offset_dims=(2,), collapsed_slice_dims=(1,), start_index_map=(1,),
        operand_batching_dims=(0,), start_indices_batching_dims=(0,))
    _run(lambda x, i: lax.gather(x, jnp.clip(i, 0, x.shape[1] - 1)[:, :3, None],
                                 dimension_numbers, (1, 1, 4), mode="promise_in_bounds"),
         RNG.standard_normal((2, 5, 6)).astype(np.float32),
         np.array([[4, 0, 2, 1, 1], [3, 3, 0, 4, 2]], np.int32))


def test_contractions_as_matmuls():
    a, b = (RNG.standard_normal((2, 5, 4)).astype(np.float32) for _ in range(2))
    proto = _run(lambda a, b: (a @ jnp.ones((4, 3)), jnp.einsum("bqd,bkd->bqk", a, b),
                               jnp.einsum("bsd,bsd->b", a, b), jnp.einsum("bsd,d->bs", a, b[0, 0]),
                               jnp.einsum("bsd,bse->bde", a, b)), a, b)
    assert sum(n.op_type == "MatMul" for n in proto.graph.node) == 5
    x = RNG.standard_normal((2, 5, 3, 2)).astype(np.float32)
    _run(lambda x: (jnp.einsum("bshd,hrd->bhsr", x, jnp.ones((3, 6, 2))),
                    jnp.einsum("bshd,bsgd->bhgs", x, x)), x)


def test_integer_semantics():
    """C-style division and remainder (toward zero), bitwise not, clamps, cumulative sums."""
    n = np.array([[-7, -6, 7, 5], [9, -9, 0, 3]], np.int32)
    _run(lambda n: (n // 2, n % 3, lax.div(n, 2), lax.rem(n, -3), jnp.abs(n), jnp.sign(n), ~n,
                    jnp.clip(n, -2, 4), jnp.maximum(n, 1), (n > 0) & (n < 5) | (n == -9),
                    jnp.cumsum(n, axis=1), lax.cumsum(n, axis=1, reverse=True), n.max(1),
                    jnp.argmin(n, axis=1), n.astype(jnp.float32) / 2, (n > 0).astype(jnp.int32)),
         n)


def test_float_semantics():
    f = np.array([[-2.5, -1.5, -0.5, 0.5], [1.5, 2.5, 0.49999997, -3.7]], np.float32)
    _run(lambda f: (
        jnp.round(f), lax.round(f, lax.RoundingMethod.AWAY_FROM_ZERO), jnp.floor(f),
        f ** 3, f ** -2, f ** 0, jnp.exp2(f), jnp.log1p(jnp.abs(f)), jnp.expm1(f),
        jax.nn.gelu(f), jax.nn.gelu(f, approximate=False), jax.nn.relu(f), jax.nn.silu(f),
        jax.nn.softmax(f), lax.rsqrt(jnp.abs(f) + 1), lax.erfc(f), jnp.tanh(f), jnp.cos(f),
        jnp.sin(f), jnp.isfinite(jnp.where(f > 2, jnp.inf, jnp.where(f < -3, jnp.nan, f))),
        jnp.where(f > 0, f, 0.0), f.prod(1), jnp.any(f > 2, axis=1), jnp.all(f > -3, axis=1),
        f.astype(jnp.int32), jnp.concatenate([f, f[:, ::-1]], 1),
        jnp.pad(f, ((0, 0), (1, 2)), constant_values=9.0), jnp.split(f, [1], axis=1)[1]), f)


def test_fused_patterns_and_near_misses():
    """LayerNorm (with or without bias), softmax along any axis and the exact GELU become one
    LayerNormalization, Softmax, and Gelu (opset 20) or the Div/Erf/Add/Mul chain ONNX
    Runtime fuses (opset 17); a LayerNorm whose mean is also read elsewhere stays unfused."""
    x = RNG.standard_normal((2, 5, 8)).astype(np.float32) * 3 + 1
    norm, bare = (zoo.nn.layer_norm(8, 1e-5, nnx.Rngs(0), use_bias=b) for b in (True, False))
    for module in (norm, bare):
        module.scale[...] = jnp.asarray(RNG.standard_normal(8), jnp.float32)
    norm.bias[...] = jnp.asarray(RNG.standard_normal(8), jnp.float32)
    gelu = zoo.nn.ACTIVATIONS["gelu"]

    def ops(proto):
        return collections.Counter(n.op_type for n in proto.graph.node)

    found = ops(_run(lambda x: (norm(x), bare(x), jax.nn.softmax(x, axis=1),
                                jax.nn.softmax(x), gelu(x)), x))
    assert (found["LayerNormalization"], found["Softmax"], found["Erf"], found["Div"]) == \
        (2, 2, 1, 1)
    assert found["ReduceSum"] == found["ReduceMax"] == 0
    assert ops(_run(gelu, x, opset=20))["Gelu"] == 1

    def shared_mean(x):
        mean = x.mean(-1, keepdims=True)
        centered = x - mean
        return centered * lax.rsqrt((centered * centered).mean(-1, keepdims=True) + 1e-5), mean
    assert ops(_run(shared_mean, x))["LayerNormalization"] == 0


# ---------------------------------------------------------------------------- refusals


def test_an_unsupported_primitive_is_named():
    closed = jax.make_jaxpr(lambda x: jnp.cumprod(x, axis=1))(
        jax.ShapeDtypeStruct((2, 3), jnp.float32))
    with pytest.raises(NotImplementedError,
                       match=r"primitive 'cumprod' \(axis=1, reverse=False\) is not supported"):
        _jaxpr_to_onnx(closed, inputs=["x"], outputs=["y"])


def test_an_unsupported_gather_is_named():
    closed = jax.make_jaxpr(lambda x, i, j: x[i, j])(
        jax.ShapeDtypeStruct((4, 5), jnp.float32), jax.ShapeDtypeStruct((3,), jnp.int32),
        jax.ShapeDtypeStruct((3,), jnp.int32))
    with pytest.raises(NotImplementedError, match=r"primitive 'gather' \(dimension_numbers=.*"
                                                  r"is not supported: an array of indices"):
        _jaxpr_to_onnx(closed, inputs=["x", "i", "j"], outputs=["y"])


def _tiny_bert() -> ZooModel:
    return zoo.build_model("bert-tiny", "classifier", num_classes=3,
                           config=_tiny("bert-tiny", **_BERT))


class _NeedsIntLength(nnx.Module):
    """An encoder that reads the sequence length as a Python int (NumPy needs one)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, rngs=None):
        np.zeros(input_ids.shape[-1])
        return self.inner(input_ids, attention_mask, token_type_ids, rngs=rngs)


def test_a_model_that_needs_a_concrete_length_is_refused(tmp_path):
    model = _tiny_bert()
    untraceable = ZooModel(_NeedsIntLength(model.encoder), None, model.info)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(NotImplementedError, match="cannot be traced with a symbolic sequence"):
        export_onnx(untraceable, path)
    assert path.read_bytes() == b"previous"


def test_over_2_gb_is_refused():
    huge = np.broadcast_to(np.float32(0), (2**29 + 1,))  # 2 GiB + 4 bytes, never allocated
    closed = jax.make_jaxpr(lambda w, x: x * w[0])(
        jax.ShapeDtypeStruct(huge.shape, huge.dtype), jax.ShapeDtypeStruct((2,), jnp.float32))
    with pytest.raises(ValueError, match="at most 2 GiB"):
        _jaxpr_to_onnx(closed, inputs=["x"], outputs=["y"], params=[("w", huge)])


def test_export_writes_atomically_at_any_opset_and_keeps_training_mode(tmp_path):
    model = _tiny_bert()
    model.train()
    path = tmp_path / "out" / "model.onnx"
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, path, opset=13)
    first = export_onnx(model, path)
    second = export_onnx(model, path, opset=18)  # replaces the first; Reduce* axes as inputs
    assert in_training_mode(model)  # exported in eval mode, then restored
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temp files
    assert second["opset"] == 18 and first["inputs"] == second["inputs"]
    ids, mask = np.array([[5, 9, 13, 2]]), np.array([[1, 1, 1, 0]])
    types = np.zeros_like(ids)
    (got,) = ReferenceEvaluator(str(path)).run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    model.eval()
    want = np.asarray(model(ids, mask, types))
    assert np.max(np.abs(got - want)) <= TOLERANCE


def test_layer_norms_softmaxes_and_gelus_are_fused(exported):
    """Each LayerNorm of the model is one LayerNormalization node, each attention's softmax
    one Softmax, and the exact GELU the chain ONNX Runtime fuses (Div, Erf, Add, Mul):
    nothing of them is left as separate reductions."""
    ops = collections.Counter(node.op_type for node in exported.proto.graph.node)
    norms = sum(isinstance(m, nnx.LayerNorm) for _, m in nnx.iter_modules(exported.model))
    assert ops["LayerNormalization"] == norms > 0
    assert ops["Softmax"] == exported.model.config.num_layers
    nodes = exported.proto.graph.node
    assert not [n.name for n in nodes if n.name.startswith(("reduce_max/", "rsqrt/"))]
    producer = {out: node for node in nodes for out in node.output}
    erfs = [producer[node.input[0]] for node in nodes if node.op_type == "Erf"]
    assert all(p.op_type == "Div" and p.name.startswith("fused/") for p in erfs)
