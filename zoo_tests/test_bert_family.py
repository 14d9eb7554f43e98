"""The BERT family's numerics against an independent float64 NumPy forward.

Real weights (all-MiniLM-L6-v2, offline package) and tiny synthetic HF folders for BERT
(classifier incl. pooler; MLM head), DistilBERT (pre_classifier) and ELECTRA (embedding
projection + classifier.dense/out_proj), written under HF's own tensor names by
``zoo_tests.bert_reference`` and read back by ``zoo.load``.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import zoo
from zoo import checkpoint
from zoo.errors import ConfigError
from zoo_tests import bert_reference as br

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
]
# Unrelated pairs (cosines measured on the reference: 0.019, -0.009, 0.013).
UNRELATED = [
    ("A man is eating food.",
     "Stock markets fell sharply on Monday after the central bank raised interest rates again."),
    ("The girl is carrying a baby.", "The quarterly report was filed late."),
    ("The new movie is awesome.", "He parked the truck in the garage."),
]
TEXTS = SENTENCES + [t for pair in UNRELATED for t in pair if t not in SENTENCES]
MINILM_ENCODER_PARAMS = 22_565_376  # the encoder the zoo keeps
MINILM_FILE_PARAMS = 22_713_216  # model card: the encoder plus the pooler (384*384 + 384)


def pad(tokenizer, texts):
    rows = [tokenizer.encode(t).ids for t in texts]
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def minilm():
    """(model, HF tensors, HF config) of all-MiniLM-L6-v2, loaded once for the module."""
    from safetensors.numpy import load_file

    folder = br.minilm_folder()
    model = zoo.load("all-minilm-l6-v2", weights=folder)
    tensors = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    return model, tensors, config


@pytest.fixture(scope="module")
def minilm_batch(minilm):
    """All test sentences in one padded batch (one shape: the eager ops compile once)."""
    return pad(minilm[0].tokenizer, TEXTS)


@pytest.fixture(scope="module")
def minilm_hidden(minilm, minilm_batch):
    return np.asarray(minilm[0](*minilm_batch))


# Synthetic folders: (model_type, writer options, head the zoo stores it under).
SYNTHETIC = {
    "bert-cls": ("bert", {"with_classifier": True}),
    "bert-mlm": ("bert", {"with_mlm": True}),
    "distilbert-cls": ("distilbert", {"with_classifier": True}),
    "electra-cls": ("electra", {"with_classifier": True, "num_labels": 3}),
}
LABELS = {"bert-cls": ("negative", "positive"), "distilbert-cls": ("negative", "positive"),
          "electra-cls": ("contradiction", "neutral", "entailment")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each synthetic checkpoint written twice: as model.safetensors and pytorch_model.bin."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for seed, (key, (model_type, options)) in enumerate(SYNTHETIC.items()):
        config, tensors = br.write_hf_folder(root / key, model_type, seed=seed, **options)
        br.write_hf_folder(root / f"{key}-bin", model_type, seed=seed, fmt="bin", **options)
        out[key] = (root / key, config, tensors)
    return out


@pytest.fixture(scope="module")
def batch():
    """A padded batch of real-looking ids (< 64 positions) for the tiny models."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, br.VOCAB_SIZE, (3, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    for row, length in enumerate((11, 7, 4)):
        ids[row, 0], ids[row, length - 1] = 101, 102
        ids[row, length:], mask[row, length:] = 0, 0
    return ids, mask


def _load_quietly(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = zoo.load(*args, **kwargs)
    complaints = [str(w.message) for w in caught
                  if issubclass(w.category, zoo.HeadInitializedWarning)
                  or "position_ids" in str(w.message)]
    assert not complaints, complaints
    return model


# ---------------------------------------------------------------------------- real weights


def test_minilm_hidden_states_match_the_float64_reference(minilm, minilm_batch, minilm_hidden):
    _, tensors, config = minilm
    ids, mask = minilm_batch
    assert len(set(mask[:len(SENTENCES)].sum(1))) == len(SENTENCES)  # so real padding
    want = br.hidden_states(tensors, config, ids, mask)
    assert minilm_hidden.shape == want.shape == (*ids.shape, 384)
    diff = float(np.abs(minilm_hidden - want)[mask.astype(bool)].max())
    assert diff <= 1e-3, f"max |zoo - reference| on real tokens = {diff:.3g}"


def test_minilm_sentence_similarity(minilm, minilm_batch, minilm_hidden):
    _, tensors, config = minilm
    ids, mask = minilm_batch
    emb = br.mean_pool(minilm_hidden, mask)
    cos = float(emb[0] @ emb[1])
    assert abs(cos - 0.755) <= 0.01, f"cosine(eating food, eating bread) = {cos:.4f}"
    ref = br.mean_pool(br.hidden_states(tensors, config, ids[:2], mask[:2]), mask[:2])
    assert abs(cos - float(ref[0] @ ref[1])) < 1e-5
    row = {text: i for i, text in enumerate(TEXTS)}
    cosines = [float(emb[row[a]] @ emb[row[b]]) for a, b in UNRELATED]
    assert all(abs(c) < 0.1 for c in cosines), f"unrelated pairs: {cosines}"


def test_minilm_parameter_count(minilm):
    model, tensors, _ = minilm
    buffers = [k for k in tensors if k.endswith("position_ids")]
    weights = {k: v for k, v in tensors.items() if k not in buffers}
    assert buffers == ["embeddings.position_ids"] and len(weights) == 103
    assert sum(v.size for v in weights.values()) == MINILM_FILE_PARAMS
    pooler = sum(v.size for k, v in weights.items() if k.startswith("pooler."))
    assert pooler == 384 * 384 + 384
    assert zoo.model.count_params(model.encoder) == MINILM_ENCODER_PARAMS \
        == MINILM_FILE_PARAMS - pooler
    assert model.head is None  # a bare encoder's pooler is not kept


def test_minilm_path_alone_loads_as_its_preset(minilm_batch, minilm_hidden):
    model = zoo.load(str(br.minilm_folder()))
    assert model.info.encoder == "all-minilm-l6-v2" and model.head is None
    np.testing.assert_array_equal(np.asarray(model(*minilm_batch)), minilm_hidden)


def test_token_type_ids_are_optional_for_bert(minilm, minilm_batch, minilm_hidden):
    model, tensors, config = minilm
    ids, mask = minilm_batch
    zeros = np.asarray(model(ids, mask, np.zeros_like(ids)))
    np.testing.assert_array_equal(zeros, minilm_hidden)
    ones = np.asarray(model(ids, mask, np.ones_like(ids)))
    changed = float(np.abs(ones - minilm_hidden).max())
    assert changed > 1e-2, f"token types 1 changed the output by only {changed:.3g}"
    want = br.hidden_states(tensors, config, ids, mask, np.ones_like(ids))
    assert np.abs(ones - want)[mask.astype(bool)].max() <= 1e-3


def test_fresh_sst2_head_on_minilm_warns_and_predicts(minilm):
    with pytest.warns(zoo.HeadInitializedWarning, match="sst2"):
        model = zoo.load("all-minilm-l6-v2", head="sst2", weights=br.minilm_folder())
    assert model.head.style == "tanh"  # BERT's pooler + classifier
    assert model.info.labels == ("negative", "positive")
    assert model.tokenizer is not None
    [prediction] = model.predict(["great movie"])
    assert prediction.label in ("negative", "positive")
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    # The encoder is still the pretrained one.
    a = checkpoint.module_params(model.encoder)
    b = checkpoint.module_params(minilm[0].encoder)
    assert sorted(a) == sorted(b)
    for path in a:
        np.testing.assert_array_equal(np.asarray(a[path]), np.asarray(b[path]), err_msg=path)


# ---------------------------------------------------------------------------- synthetic folders


@pytest.mark.parametrize("key", list(SYNTHETIC))
def test_folder_alone_matches_the_reference(folders, batch, key):
    folder, config, tensors = folders[key]
    model = _load_quietly(str(folder))
    ids, mask = batch
    real = mask.astype(bool)
    assert model.info.encoder == f"{config['model_type']}-custom"
    hidden = np.asarray(model.encoder(ids, mask))
    want = br.hidden_states(tensors, config, ids, mask)
    diff = float(np.abs(hidden - want)[real].max())
    assert diff <= 1e-4, f"hidden states: max |diff| = {diff:.3g}"
    logits = np.asarray(model(ids, mask))
    if key == "bert-mlm":
        assert model.info.head == "mlm"
        want_logits = br.mlm_logits(tensors, config, want)
        assert logits.shape == (*ids.shape, br.VOCAB_SIZE)
        diff = float(np.abs(logits - want_logits)[real].max())
    else:
        assert model.info.head == "classifier"
        assert model.info.labels == LABELS[key]  # id2label, lowercased
        want_logits = br.classifier_logits(tensors, config, want)
        assert logits.shape == (ids.shape[0], len(LABELS[key]))
        diff = float(np.abs(logits - want_logits).max())
    assert diff <= 1e-4, f"logits: max |diff| = {diff:.3g}"


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_untied_mlm_decoder_and_head_activation_follow_the_reference(tmp_path, batch,
                                                                      model_type):
    """tie_word_embeddings false: the file's own decoder (and, for BERT, the decoder's bias,
    not cls.predictions.bias); the MLM head applies the encoder's activation."""
    act = "hidden_act" if model_type == "bert" else "activation"
    config, tensors = br.write_hf_folder(
        tmp_path / model_type, model_type, seed=11, with_mlm="untied",
        config_overrides={act: "silu", "tie_word_embeddings": False})
    model = _load_quietly(str(tmp_path / model_type))
    assert model.info.head == "mlm"
    ids, mask = batch
    want = br.mlm_logits(tensors, config, br.hidden_states(tensors, config, ids, mask))
    real = mask.astype(bool)
    diff = float(np.abs(np.asarray(model(ids, mask)) - want)[real].max())
    assert diff <= 1e-4, f"logits: max |diff| = {diff:.3g}"


def test_an_electra_generator_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "generator"
    br.write_hf_folder(folder, "electra", seed=0,
                       config_overrides={"architectures": ["ElectraForMaskedLM"]})
    with pytest.raises(ConfigError, match=r"ElectraForMaskedLM \(an ELECTRA generator\) is "
                                          r"not supported") as caught:
        zoo.load(str(folder))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("key", ["bert-cls", "distilbert-cls", "electra-cls"])
def test_named_custom_model_restores_the_stored_head(folders, batch, key):
    folder, config, tensors = folders[key]
    name = f"{config['model_type']}-custom"
    model = _load_quietly(name, head="classifier", weights=folder)
    assert model.info.encoder == name and model.info.labels == LABELS[key]
    assert model.head.style == {"bert": "tanh", "distilbert": "relu",
                                "electra": "gelu"}[config["model_type"]]
    ids, mask = batch
    want = br.classifier_logits(tensors, config, br.hidden_states(tensors, config, ids, mask))
    np.testing.assert_allclose(np.asarray(model(ids, mask)), want, atol=1e-4)


def test_bert_token_types_follow_the_reference(folders, batch):
    folder, config, tensors = folders["bert-cls"]
    model = zoo.load(str(folder))
    ids, mask = batch
    types = (np.arange(ids.shape[1])[None] >= 3).astype(np.int32) * mask
    hidden = np.asarray(model.encoder(ids, mask, types))
    want = br.hidden_states(tensors, config, ids, mask, types)
    assert np.abs(hidden - want)[mask.astype(bool)].max() <= 1e-4
    np.testing.assert_array_equal(np.asarray(model(ids, mask, np.zeros_like(ids))),
                                  np.asarray(model(ids, mask)))


def test_distilbert_refuses_token_type_ids(folders, batch):
    """DistilBERT has no token-type table (type_vocab_size 0): passing token_type_ids is a
    mistake the caller can fix, so it is refused instead of silently ignored."""
    folder, _, _ = folders["distilbert-cls"]
    model = zoo.load(str(folder))
    assert model.config.type_vocab_size == 0 and model.encoder.embeddings.token_type is None
    ids, mask = batch
    assert np.isfinite(np.asarray(model(ids, mask))).all()
    with pytest.raises(ValueError, match="no token types"):
        model(ids, mask, np.zeros_like(ids))


@pytest.mark.parametrize("key", list(SYNTHETIC))
def test_bin_loads_to_the_same_parameters_as_safetensors(folders, key):
    """pytorch_model.bin (torch's zip format, written without torch) == model.safetensors.

    The MLM .bin holds what ``BertForMaskedLM.state_dict()`` holds: the tied
    ``cls.predictions.decoder.weight`` and ``cls.predictions.decoder.bias`` (the latter is
    the very tensor ``cls.predictions.bias``); safetensors files drop both aliases.
    """
    folder, _, _ = folders[key]
    bin_folder = folder.parent / f"{key}-bin"
    assert (bin_folder / "pytorch_model.bin").is_file()
    assert not (bin_folder / "model.safetensors").exists()
    a = checkpoint.module_params(_load_quietly(str(folder)))
    b = checkpoint.module_params(_load_quietly(str(bin_folder)))
    assert sorted(a) == sorted(b)
    for path in a:
        np.testing.assert_array_equal(np.asarray(b[path]), np.asarray(a[path]), err_msg=path)


def test_activations_follow_transformers_formulas():
    """config.json names activations as transformers' ACT2FN does; each is its formula."""
    from zoo.nn import ACTIVATIONS

    x = np.linspace(-12, 12, 193).astype(np.float32)
    erf = np.vectorize(math.erf)
    erf_gelu = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    tanh_gelu = 0.5 * x * (1 + np.tanh(0.7978845608 * x * (1 + 0.044715 * x * x)))
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    softplus = np.log1p(np.exp(x))
    want = {"gelu": erf_gelu, "gelu_python": erf_gelu, "gelu_10": np.clip(erf_gelu, -10, 10),
            "gelu_new": tanh_gelu, "gelu_fast": tanh_gelu, "gelu_accurate": tanh_gelu,
            "gelu_pytorch_tanh": tanh_gelu, "gelu_python_tanh": tanh_gelu,
            "quick_gelu": x * sigmoid(1.702 * x),
            "laplace": 0.5 * (1 + erf((x - 0.707107) / (0.282095 * math.sqrt(2)))),
            "linear": x, "mish": x * np.tanh(softplus), "relu": np.maximum(x, 0),
            "relu2": np.maximum(x, 0) ** 2, "relu6": np.minimum(np.maximum(x, 0), 6),
            "leaky_relu": np.where(x > 0, x, 0.01 * x),
            "hardswish": x * np.minimum(np.maximum(x + 3, 0), 6) / 6,
            "sigmoid": sigmoid(x), "silu": x * sigmoid(x), "swish": x * sigmoid(x),
            "sqrtsoftplus": np.sqrt(softplus), "tanh": np.tanh(x)}
    assert sorted(ACTIVATIONS) == sorted(want)
    for name, values in want.items():
        np.testing.assert_allclose(np.asarray(ACTIVATIONS[name](x)), values, rtol=1e-5,
                                   atol=1e-6, err_msg=name)
