"""The RoBERTa family (RoBERTa, XLM-RoBERTa): config, HF config parsing, the name table's
decoder rules, the encoder's positions and padding, and golden outputs of transformers.

Golden folders (``zoo_tests/golden/roberta-*``) are tiny transformers-written checkpoints
with ``expected.npz`` (transformers' token ids, mask and outputs), made by
``benchmarks/parity/roberta.py``'s ``write_golden``; nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import zoo
from zoo.errors import ConfigError
from zoo.models.roberta import RobertaConfig, RobertaEncoder, config_from_hf
from zoo.models.roberta.convert import LM_HEAD_BIAS, TABLE, finish
from zoo.models.roberta.modeling import position_ids
from zoo.registry import get_encoder

GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_FOLDERS = sorted(GOLDEN.glob("roberta-*"))
TINY = dict(vocab_size=97, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
            max_position_embeddings=34)

# FacebookAI/roberta-base's config.json (transformers 4.x on the hub).
HF4_ROBERTA_BASE = {
    "architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "model_type": "roberta",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "type_vocab_size": 1, "vocab_size": 50265, "position_embedding_type": "absolute",
    "torch_dtype": "float32", "transformers_version": "4.33.3", "output_past": True,
    "use_cache": True,
}
# What transformers 5.25's save_pretrained writes for an XLMRobertaForSequenceClassification.
HF5_XLMR_CLASSIFIER = {
    "add_cross_attention": False, "architectures": ["XLMRobertaForSequenceClassification"],
    "attention_probs_dropout_prob": 0.1, "bos_token_id": 0, "classifier_dropout": None,
    "dtype": "float32", "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.15,
    "hidden_size": 64, "id2label": {"0": "bad", "1": "meh", "2": "good"},
    "initializer_range": 0.2, "intermediate_size": 128, "is_decoder": False,
    "label2id": {"bad": 0, "meh": 1, "good": 2}, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514, "model_type": "xlm-roberta", "num_attention_heads": 4,
    "num_hidden_layers": 2, "pad_token_id": 1, "tie_word_embeddings": True,
    "transformers_version": "5.25.0", "type_vocab_size": 2, "use_cache": True,
    "vocab_size": 2000,
}


def tiny(**changes) -> RobertaConfig:
    return RobertaConfig(**{**TINY, **changes})


def build(config: RobertaConfig, seed: int = 0) -> RobertaEncoder:
    encoder = RobertaEncoder(config, rngs=nnx.Rngs(seed))
    encoder.eval()
    return encoder


@nnx.jit
def forward(module, *inputs):
    """One compiled program per shape (eager NNX compiles op by op: much slower here)."""
    return module(*inputs)


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize("config", [
    tiny(), tiny(model_type="xlm-roberta", type_vocab_size=2, pad_token_id=0, max_len=20),
    get_encoder("roberta-base").config, get_encoder("xlm-roberta-base").config,
])
def test_config_round_trip(config):
    assert RobertaConfig(**config.to_dict()) == config
    assert RobertaConfig(**json.loads(json.dumps(config.to_dict()))) == config


def test_config_defaults_and_head_properties():
    config = get_encoder("roberta-base").config
    assert config.max_len == 512 == config.positions  # 514 rows less the pad + 1 offset
    assert tiny(pad_token_id=0).max_len == 33
    assert (config.classifier_style, config.classifier_pooling, config.head_bias,
            config.norm_bias, config.token_classifier_style, config.mlm_activation) == (
        "tanh", "cls", True, True, None, "gelu")
    assert tiny(hidden_act="relu").mlm_activation == "gelu"  # RobertaLMHead's own GELU
    assert any(p == r"attention/(query|key|value)/kernel$" for p, _ in config.partition_rules)


@pytest.mark.parametrize("changes, field", [
    ({"vocab_size": 0}, "vocab_size"),
    ({"num_layers": True}, "num_layers"),
    ({"hidden_size": 15}, "hidden_size"),
    ({"type_vocab_size": 0}, "type_vocab_size"),
    ({"hidden_act": "prelu"}, "hidden_act"),
    ({"model_type": "bert"}, "model_type"),
    ({"dropout": 1.0}, "dropout"),
    ({"classifier_dropout": -0.1}, "classifier_dropout"),
    ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
    ({"pad_token_id": 97}, "pad_token_id"),
    ({"pad_token_id": None}, "pad_token_id"),
    ({"max_position_embeddings": 3}, "max_position_embeddings"),
    ({"max_len": 33}, "max_len"),
    ({"max_len": 1}, "max_len"),
])
def test_config_validation(changes, field):
    with pytest.raises(ValueError, match=field):
        tiny(**changes)


# ------------------------------------------------------------------------------ config.json


def test_config_from_hf_4x_hub_file():
    config = config_from_hf(HF4_ROBERTA_BASE, "roberta-base/config.json")
    assert config == get_encoder("roberta-base").config


def test_config_from_hf_5x_file():
    config = config_from_hf(HF5_XLMR_CLASSIFIER, "config.json")
    assert (config.model_type, config.vocab_size, config.hidden_size, config.num_layers,
            config.type_vocab_size, config.max_len) == ("xlm-roberta", 2000, 64, 2, 2, 512)
    assert config.classifier_dropout == config.dropout == 0.15  # null: hidden_dropout_prob
    assert config_from_hf({**HF5_XLMR_CLASSIFIER, "classifier_dropout": 0.3},
                          "c").classifier_dropout == 0.3


def test_config_from_hf_absent_keys_take_transformers_defaults():
    sizes = {k: HF4_ROBERTA_BASE[k] for k in ("model_type", "vocab_size", "hidden_size",
                                              "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size")}
    config = config_from_hf(sizes, "c")
    assert (config.max_position_embeddings, config.type_vocab_size, config.layer_norm_eps,
            config.pad_token_id, config.hidden_act, config.max_len) == (512, 2, 1e-12, 1,
                                                                        "gelu", 510)


@pytest.mark.parametrize("changes, message", [
    ({"position_embedding_type": "relative_key"},
     "position_embedding_type 'relative_key' is not supported"),
    ({"is_decoder": True}, "is_decoder True is not supported"),
    ({"add_cross_attention": True}, "add_cross_attention True is not supported"),
    ({"hidden_act": "xielu"}, "hidden_act 'xielu' is not supported"),
    ({"pad_token_id": None}, "pad_token_id None is not supported"),
    ({"pad_token_id": 600_000}, "pad_token_id must be"),
    ({"model_type": "bert"}, "model_type 'bert' is not a RoBERTa type"),
    ({"num_hidden_layers": None, "intermediate_size": None},
     "missing num_hidden_layers, intermediate_size"),
    ({"max_position_embeddings": 2}, "max_position_embeddings=2 leaves 0 positions"),
])
def test_config_from_hf_refusals(changes, message):
    hf = {k: v for k, v in {**HF4_ROBERTA_BASE, **changes}.items() if v is not None
          or k == "pad_token_id"}
    with pytest.raises(ConfigError, match=message) as err:
        config_from_hf(hf, "some/config.json")
    assert str(err.value).startswith("some/config.json: ")


def test_config_from_hf_not_an_object():
    with pytest.raises(ConfigError, match="expected a JSON object"):
        config_from_hf(["roberta"], "c.json")


# ------------------------------------------------------------------------------ name table


def test_table_names_every_task_class():
    shapes = {"roberta.embeddings.word_embeddings.weight": (10, 4),
              "roberta.encoder.layer.3.attention.self.key.weight": (4, 4),
              "roberta.encoder.layer.0.output.LayerNorm.bias": (4,),
              "roberta.pooler.dense.weight": (4, 4), "roberta.embeddings.position_ids": (1, 9),
              "classifier.dense.weight": (4, 4), "classifier.out_proj.bias": (3,),
              "lm_head.layer_norm.weight": (4,)}
    params, unmapped, notes = TABLE.map({k: np.zeros(s, np.float32) for k, s in shapes.items()},
                                        "regressor", keep_pooler=True)
    assert not unmapped
    assert sorted(params) == [
        "encoder/embeddings/word/embedding", "encoder/layers/0/output_norm/bias",
        "encoder/layers/3/attention/key/kernel", "heads/mlm/norm/scale",
        "heads/regressor/classifier/bias", "heads/regressor/dense/kernel"]
    assert len(notes) == 2  # the pooler and the position_ids buffer
    token, _, _ = TABLE.map({"classifier.weight": np.zeros((5, 4), np.float32)},
                            "token-classifier", keep_pooler=False)
    assert token["heads/token-classifier/classifier/kernel"].shape == (4, 5)


def _mlm_params(**extra):
    embedding = np.arange(12, dtype=np.float32).reshape(6, 2)
    return {"encoder/embeddings/word/embedding": embedding, **extra}, embedding


def test_finish_tied_decoder_transformers5():
    bias = np.full(6, 0.5, np.float32)
    params, embedding = _mlm_params(**{LM_HEAD_BIAS: bias})
    finish(params, None)
    assert LM_HEAD_BIAS not in params
    np.testing.assert_array_equal(params["heads/mlm/decoder/bias"], bias)
    np.testing.assert_array_equal(params["heads/mlm/decoder/kernel"], embedding.T)


def test_finish_untied_decoder_uses_its_own_bias():
    kernel, bias = np.ones((2, 6), np.float32), np.full(6, 2.0, np.float32)
    params, _ = _mlm_params(**{LM_HEAD_BIAS: np.zeros(6, np.float32),
                               "heads/mlm/decoder/bias": bias,
                               "heads/mlm/decoder/kernel": kernel})
    finish(params, None)
    assert LM_HEAD_BIAS not in params
    np.testing.assert_array_equal(params["heads/mlm/decoder/bias"], bias)
    np.testing.assert_array_equal(params["heads/mlm/decoder/kernel"], kernel)


def test_finish_without_mlm_head_adds_nothing():
    params, _ = _mlm_params()
    finish(params, None)
    assert list(params) == ["encoder/embeddings/word/embedding"]


# ------------------------------------------------------------------------------ encoder


def test_position_ids_follow_padding_as_transformers():
    ids = jnp.array([[0, 5, 6, 2, 1, 1], [0, 5, 1, 6, 2, 1], [0, 7, 7, 7, 7, 2]])
    np.testing.assert_array_equal(position_ids(ids, 1), [[2, 3, 4, 5, 1, 1],
                                                         [2, 3, 1, 4, 5, 1],
                                                         [2, 3, 4, 5, 6, 7]])
    np.testing.assert_array_equal(position_ids(ids, 0), [[0, 1, 2, 3, 4, 5],
                                                         [0, 1, 2, 3, 4, 5],
                                                         [0, 1, 2, 3, 4, 5]])


def _batch(lengths, pad=1, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max(lengths)), pad, np.int32)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(3, TINY["vocab_size"], length)
        ids[row, 0], ids[row, length - 1] = 0, 2
        mask[row, :length] = 1
    return ids, mask


def test_forward_shapes_jit_and_padding_invariance():
    encoder = build(tiny())
    lengths = [3, 12, 5]
    ids, mask = _batch(lengths)
    hidden = forward(encoder, jnp.asarray(ids), jnp.asarray(mask))
    assert hidden.shape == (3, 12, 16) and hidden.dtype == jnp.float32
    # Without the 12-token row: row 0 is padded less, row 2 not at all. Same real tokens.
    short = forward(encoder, jnp.asarray(ids[[0, 2], :5]), jnp.asarray(mask[[0, 2], :5]))
    np.testing.assert_allclose(hidden[0, :3], short[0, :3], atol=1e-5)
    np.testing.assert_allclose(hidden[2, :5], short[1], atol=1e-5)


def test_token_types_row_zero_by_default():
    encoder = build(tiny(type_vocab_size=2))
    ids, mask = _batch([6, 4])
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    plain = forward(encoder, ids, mask)
    np.testing.assert_allclose(forward(encoder, ids, mask, jnp.zeros_like(ids)), plain,
                               atol=1e-6)
    assert np.abs(np.asarray(forward(encoder, ids, mask, jnp.ones_like(ids)) - plain)
                  ).max() > 1e-3


def test_too_long_input_is_refused():
    encoder = build(tiny())  # 34 rows: 32 usable positions
    ids, mask = _batch([32])
    assert forward(encoder, jnp.asarray(ids), jnp.asarray(mask)).shape == (1, 32, 16)
    ids, mask = _batch([33])
    with pytest.raises(ValueError, match="exceeds the model's 32 positions"):
        forward(encoder, jnp.asarray(ids), jnp.asarray(mask))


def test_token_embeddings_is_the_word_table():
    encoder = build(tiny())
    assert encoder.token_embeddings() is encoder.embeddings.word.embedding
    assert encoder.token_embeddings()[...].shape == (97, 16)


# ------------------------------------------------------------------------------ presets


def test_presets():
    expected = {"roberta-base": ("roberta", 50265, 12, 768, "FacebookAI/roberta-base"),
                "distilroberta-base": ("roberta", 50265, 6, 768, "distilbert/distilroberta-base"),
                "xlm-roberta-base": ("xlm-roberta", 250002, 12, 768,
                                     "FacebookAI/xlm-roberta-base"),
                "roberta-custom": ("roberta", 50265, 12, 768, None),
                "xlm-roberta-custom": ("xlm-roberta", 250002, 12, 768, None)}
    for name, (model_type, vocab, layers, hidden, repo) in expected.items():
        spec = get_encoder(name)
        assert spec.family.name == "roberta" and spec.module is RobertaEncoder
        assert (spec.config.model_type, spec.config.vocab_size, spec.config.num_layers,
                spec.config.hidden_size, getattr(spec.source, "repo_id", None)) == (
            model_type, vocab, layers, hidden, repo)
    e5 = get_encoder("multilingual-e5-small")  # a BERT checkpoint (model_type "bert")
    assert e5.family.name == "bert" and e5.config.model_type == "bert"
    assert (e5.config.vocab_size, e5.config.hidden_size, e5.config.num_layers,
            e5.config.intermediate_size, e5.config.type_vocab_size) == (250037, 384, 12, 1536, 2)
    assert dict(e5.embedding) == {"pooling": "mean", "normalize": True, "max_len": 512}


# ------------------------------------------------------------------------------ golden


def test_golden_folders_exist():
    names = {p.name for p in GOLDEN_FOLDERS}
    assert {"roberta-base", "roberta-classifier", "roberta-regressor", "roberta-token",
            "roberta-mlm", "roberta-xlm-base", "roberta-xlm-mlm-untied"} <= names


@pytest.mark.parametrize("folder", GOLDEN_FOLDERS, ids=[p.name for p in GOLDEN_FOLDERS])
def test_golden(folder):
    expected = np.load(folder / "expected.npz", allow_pickle=False)
    model = zoo.load(str(folder))
    ids, mask = expected["input_ids"], expected["attention_mask"]
    for row, sentence in enumerate(expected["sentences"]):
        assert model.tokenizer.encode(str(sentence)).ids == ids[row, :mask[row].sum()].tolist()
    output = np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(mask)))
    want = expected["output"]
    if "positions" in expected:  # MLM: logits kept at some positions
        rows, cols = expected["positions"].T
        output = output[rows, cols]
    # Hidden states and tag logits are compared at pads too: transformers gives a pad the
    # position pad_token_id (not the next position), which only the pads' outputs show.
    output = output.reshape(want.shape)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(output, want, rtol=0, atol=1e-5 * scale)
    task = str(expected["task"])
    if json.loads((folder / "config.json").read_text()).get("problem_type") == \
            "multi_label_classification":
        task = "multi-label"
    assert model.info.head == {"base": None, "classifier": "classifier", "regressor": "regressor",
                               "token": "token-classifier", "mlm": "mlm",
                               "multi-label": "multi-label-classifier"}[task]
    assert model.info.encoder == f"{expected['model_type']}-custom"


def test_a_multi_label_checkpoint_predicts_every_label_over_the_threshold():
    """problem_type multi_label_classification: transformers' logits (golden) read with a
    sigmoid per label; predict keeps every label at or over 0.5, most probable first."""
    folder = GOLDEN / "roberta-multi-label"
    expected = np.load(folder / "expected.npz", allow_pickle=False)
    model = zoo.load(str(folder))
    assert model.task.name == "multi-label-classification"
    assert model.info.labels == ("anger", "fear", "joy", "sadness")
    sentences = [str(s) for s in expected["sentences"]]
    probabilities = 1 / (1 + np.exp(-expected["output"].astype(np.float64)))
    chosen = 0
    for prediction, p in zip(model.predict(sentences), probabilities):
        assert [prediction.probabilities[label] for label in model.info.labels] == \
            pytest.approx(p.tolist(), abs=1e-5)
        over = sorted((i for i in range(4) if p[i] >= 0.5), key=lambda i: -p[i])
        assert prediction.labels == tuple(model.info.labels[i] for i in over)
        assert prediction.scores == pytest.approx([p[i] for i in over], abs=1e-5)
        chosen += len(over)
    assert 0 < chosen < 4 * len(sentences)  # the threshold decides something here


def test_golden_classifier_labels():
    model = zoo.load(str(GOLDEN / "roberta-classifier"))
    assert model.info.labels == ("negative", "neutral", "positive")
    assert dataclasses.asdict(model.info.config) == model.info.config.to_dict()


def test_golden_eager_call_checks_inputs():
    folder = GOLDEN / "roberta-regressor"
    expected = np.load(folder / "expected.npz", allow_pickle=False)
    model = zoo.load(str(folder))
    ids, mask = expected["input_ids"].copy(), expected["attention_mask"]
    ids[0, 1] = 10_000  # beyond the vocabulary
    with pytest.raises(ValueError, match="must lie in"):
        model(jnp.asarray(ids), jnp.asarray(mask))
