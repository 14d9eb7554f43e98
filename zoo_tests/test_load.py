"""zoo.load: weights resolution order, strict restore, head handling, offline errors."""

import json
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import checkpoint
from zoo.run import export_model

TINY = "encoder-m2l-tiny"
IDS = jnp.array([[1, 9, 8, 7, 2, 0], [1, 5, 2, 0, 0, 0]], jnp.int32)
MASK = (IDS != 0).astype(jnp.int32)


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "store"
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(path))
    return path


def _export(model, path):
    return export_model(model, path, None, source={"kind": "test"})


def test_round_trip_restores_every_parameter(tmp_path):
    model = zoo.build_model(TINY, "mlm", seed=7)
    _export(model, tmp_path / "m")
    loaded = zoo.load(TINY, head="mlm", weights=tmp_path / "m")
    np.testing.assert_array_equal(loaded(IDS, MASK), model(IDS, MASK))
    manifest = json.loads((tmp_path / "m" / "zoo.json").read_text())
    assert manifest["num_params"] == sum(
        np.size(v) for v in checkpoint.module_params(model).values())


def test_compressed_directories_of_earlier_versions_still_load(tmp_path, monkeypatch):
    """Model directories are now written uncompressed; those written before (zstd, orbax's
    default) load to the same parameters, and the loaded parameters are independent of
    each other's loads (restored arrays back them uncopied)."""
    def compressed(directory, tree):
        with checkpoint._local_checkpointer() as checkpointer:
            checkpointer.save(directory, tree)
            checkpointer.wait_until_finished()

    model = zoo.build_model(TINY, "mlm", seed=7)
    _export(model, tmp_path / "plain")
    monkeypatch.setattr(checkpoint, "_save_params", compressed)
    _export(model, tmp_path / "zstd")
    sizes = {name: sum(f.stat().st_size for f in (tmp_path / name / "params").rglob("*")
                       if f.is_file()) for name in ("plain", "zstd")}
    assert sizes["zstd"] < sizes["plain"]  # the two formats really differ
    first, second = (zoo.load(tmp_path / name) for name in ("plain", "zstd"))
    for loaded in (first, second):
        np.testing.assert_array_equal(loaded(IDS, MASK), model(IDS, MASK))
    want = checkpoint.module_params(model)
    got = checkpoint.module_params(first)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    table = first.encoder.token_embeddings()
    table.set_value(table.get_value() * 0)  # changing one load changes no other
    np.testing.assert_array_equal(zoo.load(tmp_path / "plain")(IDS, MASK), model(IDS, MASK))


def test_directory_alone_opens_with_its_head(tmp_path):
    model = zoo.build_model(TINY, "sst2", seed=3)
    _export(model, tmp_path / "run" / "model")
    loaded = zoo.load(str(tmp_path / "run"))  # a run directory holding model/
    assert loaded.info.head == "sst2" and loaded.info.labels == ("negative", "positive")
    np.testing.assert_array_equal(loaded(IDS, MASK), model(IDS, MASK))


def test_missing_head_is_initialised_from_seed_with_a_warning(tmp_path):
    _export(zoo.build_model(TINY, "mlm", seed=1), tmp_path / "m")
    with pytest.warns(zoo.HeadInitializedWarning, match="sst2"):
        loaded = zoo.load(TINY, head="sst2", weights=tmp_path / "m", seed=5)
    fresh = zoo.build_model(TINY, "sst2", seed=5)
    np.testing.assert_array_equal(loaded.head.classifier.kernel[...],
                                  fresh.head.classifier.kernel[...])


def test_other_num_classes_drops_the_stored_head(tmp_path):
    _export(zoo.build_model(TINY, "sst2", seed=1), tmp_path / "m")
    with pytest.warns(zoo.HeadInitializedWarning, match="3 were asked"):
        loaded = zoo.load(TINY, head="sst2", weights=tmp_path / "m", num_classes=3)
    assert loaded(IDS, MASK).shape == (2, 3)


def test_stored_head_restored_without_warning(tmp_path):
    model = zoo.build_model(TINY, "sst2", seed=2)
    _export(model, tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = zoo.load(TINY, head="sst2", weights=tmp_path / "m")
    np.testing.assert_array_equal(loaded(IDS, MASK), model(IDS, MASK))


def test_mismatch_is_reported_in_one_error(tmp_path):
    _export(zoo.build_model(TINY, "mlm"), tmp_path / "m")
    params_dir = tmp_path / "m"
    flat = checkpoint.module_params(zoo.build_model(TINY, "mlm").encoder, "encoder/")
    del flat["encoder/blocks/0/attention/query/kernel"]  # missing
    flat["encoder/embed/embedding"] = np.zeros((7, 32), np.float32)  # mis-shaped
    flat["encoder/extra/kernel"] = np.zeros((2,), np.float32)  # unexpected
    manifest = json.loads((params_dir / "zoo.json").read_text())
    checkpoint.save_model_dir(tmp_path / "bad", flat, {k: manifest[k] for k in ("model", "config")}
                              | {"heads": {}})
    with pytest.raises(zoo.CheckpointMismatchError) as err:
        zoo.load(TINY, weights=tmp_path / "bad")
    report = str(err.value)
    assert "1 missing" in report and "encoder/blocks/0/attention/query/kernel" in report
    assert "1 unexpected" in report and "encoder/extra/kernel" in report
    assert "encoder/embed/embedding: expected (512, 32) float32, found (7, 32) float32" in report


def test_other_architecture_is_refused(tmp_path):
    _export(zoo.build_model(TINY, "mlm"), tmp_path / "m")
    with pytest.raises(zoo.CheckpointMismatchError, match="missing"):
        with pytest.warns(UserWarning):
            zoo.load("encoder-m2l-small", weights=tmp_path / "m")


def test_store_is_used_before_any_download(store, monkeypatch):
    _export(zoo.build_model(TINY, "mlm", seed=4), store / TINY)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: pytest.fail("downloaded"))
    model = zoo.load(TINY, head="mlm")
    np.testing.assert_array_equal(model(IDS, MASK),
                                  zoo.build_model(TINY, "mlm", seed=4)(IDS, MASK))


def test_no_published_weights_says_what_to_do(store):
    with pytest.raises(zoo.WeightsNotFoundError, match="pretrained=False"):
        zoo.load(TINY)


def test_offline_error_names_the_command(store, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: set the constant as well
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(zoo.WeightsNotFoundError) as err:
        zoo.load("encoder-mlm-v1")
    message = str(err.value)
    assert "python -m convert.haiku_to_flax v1_mlm_train_state_362000.pkl" in message
    assert "huggingface.co/morenolq/m2l_2022_nlp" in message
    assert not (store / "encoder-mlm-v1").exists()


def test_pretrained_false_is_random_and_seeded():
    a = zoo.load(TINY, head="sst2", pretrained=False, seed=1)
    b = zoo.load(TINY, head="sst2", pretrained=False, seed=1)
    c = zoo.load(TINY, head="sst2", pretrained=False, seed=2)
    np.testing.assert_array_equal(a(IDS, MASK), b(IDS, MASK))
    assert not np.allclose(a(IDS, MASK), c(IDS, MASK))


def test_not_a_model_directory(tmp_path):
    with pytest.raises(zoo.WeightsNotFoundError, match="neither a zoo model directory"):
        zoo.load(TINY, weights=tmp_path)


def test_download_then_convert_into_the_store(store, monkeypatch, tmp_path):
    """The hub path end to end, with the 'download' served from local files."""
    from zoo_tests import haiku_reference as hr

    config = zoo.get_encoder("encoder-mlm-v1").config
    logits_fn, _, params = hr.reference_params(config, "mlm")
    published = tmp_path / "hub"
    published.mkdir()
    hr.write_2022_pickle(published / "v1_mlm_train_state_362000.pkl",
                         hr.make_training_state(params))
    from zoo.text import train_tokenizer

    train_tokenizer(["a small corpus for a tokenizer"] * 3, vocab_size=64).save(
        str(published / "v1_en_tokenizer_1M.json"))
    calls = []

    def fake_download(repo_id, filename, local_dir=None, **kwargs):
        calls.append(repo_id)
        return str(published / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    model = zoo.load("encoder-mlm-v1", head="mlm")
    assert calls == ["morenolq/m2l_2022_nlp"] * 2  # the pickle and the tokenizer
    assert (store / "encoder-mlm-v1" / "zoo.json").is_file()
    assert model.tokenizer is not None
    ids, mask = hr.padded_batch(config)
    want = logits_fn.apply(params, None, ids, hr.mask_3d(mask))
    np.testing.assert_allclose(np.asarray(model(ids, mask)), np.asarray(want), rtol=1e-5, atol=1e-4)
    zoo.load("encoder-mlm-v1", head="mlm")  # now from the store: no second download
    assert calls == ["morenolq/m2l_2022_nlp"] * 2
