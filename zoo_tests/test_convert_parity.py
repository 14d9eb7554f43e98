"""The converted NNX model computes what the original Haiku model computes.

The Haiku side is the tutorial's model re-written in dm-haiku (``haiku_reference``),
with random non-trivial parameters (so biases and LayerNorm offsets matter), pickled as a
2022 ``TrainingState`` and converted by ``convert.haiku_to_flax``.
"""

import json

import jax
import numpy as np
import pytest

import zoo
from zoo.models.m2l.convert import convert_file
from zoo_tests import haiku_reference as hr

TOLERANCE = dict(rtol=1e-5, atol=1e-4)
HAIKU_HEAD = {"mlm": "mlm", "sst2": "classifier"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(model, head) -> (config, haiku logits_fn, hidden_fn, params, pickle, model dir), cached."""
    cache = {}

    def convert(model, head):
        if (model, head) not in cache:
            directory = tmp_path_factory.mktemp(f"{model}-{head}")
            config = zoo.get_encoder(model).config
            logits_fn, hidden_fn, params = hr.reference_params(config, HAIKU_HEAD[head])
            path = hr.write_2022_pickle(directory / "state.pkl", hr.make_training_state(params))
            out = convert_file(path, out=directory / "converted", model=model,
                               head=None if head == "mlm" else head)
            cache[model, head] = config, logits_fn, hidden_fn, params, path, out
        return cache[model, head]

    return convert


@pytest.mark.parametrize("model", ["encoder-m2l-tiny", "encoder-mlm-v1"])
@pytest.mark.parametrize("head", ["mlm", "sst2"])
def test_logits_match_haiku(converted, model, head):
    config, logits_fn, _, params, _, out = converted(model, head)
    port = zoo.load(model, head=head, weights=out)
    ids, attention_mask = hr.padded_batch(config)
    with jax.default_matmul_precision("float32"):
        want = logits_fn.apply(params, None, ids, hr.mask_3d(attention_mask))
        got = port(ids, attention_mask)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOLERANCE)


@pytest.mark.parametrize("model", ["encoder-m2l-tiny", "encoder-mlm-v1"])
def test_embeddings_and_first_block_match_haiku(converted, model):
    config, _, hidden_fn, params, _, out = converted(model, "mlm")
    encoder = zoo.load(model, weights=out).encoder
    ids, attention_mask = hr.padded_batch(config)
    mask = hr.mask_3d(attention_mask)
    with jax.default_matmul_precision("float32"):
        embedded = encoder.embeddings(ids)
        np.testing.assert_allclose(
            np.asarray(embedded), np.asarray(hidden_fn.apply(params, None, ids, mask, 0)),
            **TOLERANCE)
        np.testing.assert_allclose(
            np.asarray(encoder.blocks[0](embedded.reshape(-1, config.d_model), attention_mask)
                       .reshape(embedded.shape)),
            np.asarray(hidden_fn.apply(params, None, ids, mask, 1)), **TOLERANCE)


def test_manifest_records_head_and_source(converted):
    *_, out = converted("encoder-m2l-tiny", "sst2")
    manifest = json.loads((out / "zoo.json").read_text())
    assert manifest["model"] == "encoder-m2l-tiny"
    assert manifest["heads"] == {"sst2": {"kind": "classification", "num_classes": 2,
                                          "labels": ["negative", "positive"]}}
    assert manifest["default_head"] == "sst2"
    assert manifest["source"]["kind"] == "haiku-training-state"
    assert len(manifest["source"]["sha256"]) == 64
    assert manifest["source"]["converter_version"] == "1"
    assert manifest["config"] == zoo.get_encoder("encoder-m2l-tiny").config.to_dict()


def test_default_output_is_the_weights_store(converted, tmp_path, monkeypatch):
    """Without --out the model lands where ``zoo.load(name)`` looks, so it works offline."""
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "store"))
    config, logits_fn, _, params, path, _ = converted("encoder-m2l-tiny", "mlm")
    out = convert_file(path, model="encoder-m2l-tiny")
    assert out == (tmp_path / "store" / "encoder-m2l-tiny").resolve()
    model = zoo.load("encoder-m2l-tiny", head="mlm")
    ids, attention_mask = hr.padded_batch(config)
    np.testing.assert_allclose(
        np.asarray(model(ids, attention_mask)),
        np.asarray(logits_fn.apply(params, None, ids, hr.mask_3d(attention_mask))), **TOLERANCE)
