"""Every format a 2022 run could have written converts to the same numbers."""

import numpy as np
import pytest

import zoo
from zoo.models.m2l.convert import convert_file
from zoo.models.m2l.haiku_pickle import load_checkpoint
from zoo import checkpoint
from zoo_tests import haiku_reference as hr

MODEL = "encoder-m2l-tiny"


@pytest.fixture(scope="module")
def state():
    _, _, params = hr.reference_params(zoo.get_encoder(MODEL).config, "classifier")
    return hr.make_training_state(params, step=2)


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory, state):
    directory = tmp_path_factory.mktemp("reference")
    path = hr.write_2022_pickle(directory / "state.pkl", state, "jax-0.3.25", 4)
    return convert_file(path, out=directory / "converted", model=MODEL)


def _stored(directory):
    model = zoo.load(str(directory))
    return (checkpoint.module_params(model.encoder, "encoder/")
            | checkpoint.module_params(model.head, "heads/sst2/"))


@pytest.mark.parametrize("protocol", hr.PROTOCOLS)
@pytest.mark.parametrize("variant", sorted(hr.PICKLE_VARIANTS))
def test_variant_reads_exact_params(tmp_path, state, variant, protocol):
    path = hr.write_2022_pickle(tmp_path / "state.pkl", state, variant, protocol)
    params, info = load_checkpoint(path)
    assert info.has_opt_state and info.protocol == protocol
    assert set(params) == set(state.params)
    for module, leaves in state.params.items():
        assert set(params[module]) == set(leaves)
        for name, value in leaves.items():
            assert params[module][name].dtype == np.float32
            np.testing.assert_array_equal(params[module][name], np.asarray(value))


@pytest.mark.parametrize("variant", sorted(hr.PICKLE_VARIANTS))
def test_variant_converts_to_identical_numbers(tmp_path, state, reference_dir, variant):
    path = hr.write_2022_pickle(tmp_path / "state.pkl", state, variant, 2)
    converted = _stored(convert_file(path, out=tmp_path / "converted", model=MODEL))
    reference = _stored(reference_dir)
    assert set(converted) == set(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(np.asarray(converted[key]), np.asarray(value), err_msg=key)


def test_variants_use_the_2022_globals(tmp_path, state):
    """The fixtures really exercise each allow-listed global (not just plain numpy)."""
    used = set()
    for variant in hr.PICKLE_VARIANTS:
        for protocol in hr.PROTOCOLS:
            path = hr.write_2022_pickle(tmp_path / "state.pkl", state, variant, protocol)
            used |= set(load_checkpoint(path)[1].globals)
    assert used == {
        "__main__.TrainingState", "jax._src.device_array.reconstruct_device_array",
        "jax._src.array._reconstruct_array", "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
        "optax._src.base.EmptyState", "optax._src.transform.ScaleByAdamState",
        "haiku._src.data_structures.FlatMapping", "_codecs.encode",
    }
