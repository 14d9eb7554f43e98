"""``read_torch_bin`` reads torch's zip state dicts exactly and refuses hostile ones unrun.

Files are written by ``zoo_tests.torch_format`` (no torch). Hostile cases carry a payload
that would create ``marker`` if anything were executed.
"""

import collections
import io
import os
import pickle
import time
import zipfile

import numpy as np
import pytest

from zoo.hf import torch_bin
from zoo.hf.torch_bin import is_torch_zip, read_torch_bin
from zoo.safe_pickle import UnsafePickleError
from zoo_tests import torch_format as tf


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _good():
    return tf.tensor(np.arange(4, dtype=np.float32))


# ------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_round_trip_is_exact(tmp_path, protocol):
    rng = np.random.default_rng(0)
    shared = rng.standard_normal(24).astype(np.float32)
    storage = tf.Storage(shared)
    raw_bf16 = rng.integers(0, 2**16, size=(3, 5), dtype=np.uint16)
    raw_bf16[0, :2] = (0x3F80, 0xC000)  # 1.0, -2.0
    plain = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal((2, 7)).astype(np.float16),
        "f64": rng.standard_normal(5),
        "i64": rng.integers(-2**62, 2**62, size=(4, 2), dtype=np.int64),
        "i32": rng.integers(-2**31, 2**31, size=3, dtype=np.int32),
        "i16": rng.integers(-2**15, 2**15, size=3, dtype=np.int16),
        "i8": rng.integers(-128, 128, size=3, dtype=np.int8),
        "u8": rng.integers(0, 256, size=3, dtype=np.uint8),
        "bool": rng.random((2, 3)) > 0.5,
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(3.5, np.float32),
    }
    written = {
        **plain,
        "bf16": tf.bfloat16(raw_bf16),
        "whole": tf.Tensor(storage, 0, (24,), (1,)),
        "transposed": tf.Tensor(storage, 0, (6, 4), (1, 6)),  # (4, 6).T
        "offset": tf.Tensor(storage, 5, (2, 3), (3, 1), parameter=True),
        "broadcast": tf.Tensor(storage, 23, (2, 3), (0, 0)),
    }
    expected = {
        **plain,
        "bf16": (raw_bf16.astype(np.uint32) << 16).view(np.float32),
        "whole": shared,
        "transposed": shared.reshape(4, 6).T,
        "offset": shared[5:11].reshape(2, 3),
        "broadcast": np.full((2, 3), shared[23]),
    }
    path = tf.write_torch_bin(tmp_path / "pytorch_model.bin", written, protocol=protocol)
    assert is_torch_zip(path)
    result = read_torch_bin(path)
    assert list(result) == list(written)
    for name, want in expected.items():
        got = result[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.c_contiguous and got.flags.writeable and got.dtype.isnative, name
        assert got.flags.owndata or got.base is not None and got.base.flags.owndata, name
    assert result["bf16"][0, 0] == 1.0 and result["bf16"][0, 1] == -2.0
    result["whole"][0] += 1  # views were copied out: no aliasing between tensors
    assert result["transposed"][0, 0] == shared[0]


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_a_state_dict_wrapped_once_is_accepted(tmp_path, wrapper):
    inner = {"model": tf.tensor(np.arange(3, dtype=np.float32))}  # a tensor may be "model"
    path = tf.write_torch_bin(tmp_path / "m.bin", {wrapper: inner} if wrapper else inner)
    np.testing.assert_array_equal(read_torch_bin(path)["model"], [0, 1, 2])


def test_each_storage_is_read_once_and_only_when_used(tmp_path, monkeypatch):
    storage = tf.Storage(np.arange(12, dtype=np.int64))
    path = tf.write_torch_bin(tmp_path / "m.bin", {
        "a": tf.Tensor(storage, 0, (12,), (1,)), "b": tf.Tensor(storage, 1, (2,), (5,)),
        "c": np.ones(3, np.float32)}, members={"archive/data/unused": b"\0" * 8})
    reads = collections.Counter()
    real_read = zipfile.ZipFile.read

    def counting_read(self, name, pwd=None):
        reads[getattr(name, "filename", name)] += 1
        return real_read(self, name, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "read", counting_read)
    result = read_torch_bin(path)
    np.testing.assert_array_equal(result["b"], [1, 6])
    assert reads == {"archive/data.pkl": 1, "archive/byteorder": 1, "archive/data/0": 1,
                     "archive/data/1": 1}


def test_is_torch_zip(tmp_path):
    good = tf.write_torch_bin(tmp_path / "good.bin", {"a": np.zeros(2, np.float32)})
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    assert is_torch_zip(good)
    assert not is_torch_zip(tmp_path / "legacy.bin")
    assert not is_torch_zip(tmp_path / "other.zip")
    assert not is_torch_zip(tmp_path / "missing.bin")


# ------------------------------------------------------------------------- hostile files


def _storage(n=12, **kwargs):
    return tf.Storage(np.arange(n, dtype=np.float32), **kwargs)


def _persid_pickle(pid) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: pid if obj == "x" else None
    pickler.dump({"a": "x"})
    return buffer.getvalue()


def _cyclic():
    cycle = {}
    cycle["self"] = cycle
    return cycle


def _cases(marker):
    """name -> (write(path, payload), text the error must contain).

    ``payload`` runs ``touch marker`` if executed; ``state`` places it after the defect, so
    the defect must be what is refused. Defects found after unpickling (the top object,
    output size, storage bytes) are written without it (``plain``): the payload's global
    would be refused first.
    """
    command = f"touch {marker}"

    def state(*entries, payload=True, **kwargs):
        def write(path, payload_object):
            tensors = dict(entries)
            if payload:
                tensors["zz_payload"] = payload_object
            tf.write_torch_bin(path, tensors, **kwargs)
        return write

    def plain(*entries, **kwargs):
        return state(*entries, payload=False, **kwargs)

    def raw_pickle(data: bytes):
        return state(("a", _good()), data_pkl=data)

    def file_bytes(data: bytes):
        return lambda path, payload: path.write_bytes(data)

    def then(write, edit):
        def both(path, payload):
            write(path, payload)
            edit(path)
        return both

    def flip_last_storage_byte(path):
        data = bytearray(path.read_bytes())
        pos = data.index(np.arange(4, dtype=np.float32).tobytes()) + 15
        data[pos] ^= 0xFF
        path.write_bytes(bytes(data))

    legacy = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # torch's legacy magic number
              + pickle.dumps(_Reduce(os.system, command), protocol=2))
    return {
        "payload global via REDUCE": (state(), r"refused global (posix|nt)\.system"),
        "builtins.exec": (state(("x", _Reduce(exec, f"open({str(marker)!r}, 'w')"))),
                          "refused global .*exec"),
        "builtins.getattr": (raw_pickle(b"\x80\x02cbuiltins\ngetattr\n(X\x02\x00\x00\x00os"
                                        b"X\x06\x00\x00\x00systemtR."), "builtins.getattr"),
        "GLOBAL os.system": (raw_pickle(f"cos\nsystem\n(S'{command}'\ntR.".encode()),
                             "refused global os.system"),
        "INST": (raw_pickle(f"(S'{command}'\nios\nsystem\n.".encode()), "INST"),
        "OBJ": (raw_pickle(b"\x80\x02cos\nsystem\nq\x00(h\x00S'" + command.encode() + b"'\no."),
                "OBJ"),
        "text PERSID": (raw_pickle(b"(lp0\nPpayload\na."), "persistent id"),
        "EXT1": (raw_pickle(b"\x80\x02\x82\x01)R."), "extension code"),
        "unexpected persistent id": (raw_pickle(_persid_pickle("payload")),
                                     "refused persistent id"),
        "persistent id with a payload type": (raw_pickle(_persid_pickle(
            ("storage", os.system, "0", "cpu", 4))), r"refused global (posix|nt)\.system"),
        "BUILD on a storage type": (raw_pickle(
            b"\x80\x02ctorch\nFloatStorage\n}X\x04\x00\x00\x00nameX\x01\x00\x00\x00xsb."),
            "refused BUILD"),
        "OrderedDict called with items": (raw_pickle(
            b"\x80\x02ccollections\nOrderedDict\n]\x85R."), "malformed"),
        "deep nesting": (raw_pickle(b"\x80\x02" + b"(" * 1000 + b"t" * 1000 + b"."), "nesting"),
        "offset past the storage": (state(("a", tf.Tensor(_storage(4), 4, (1,), (1,)))),
                                    "reaches element 4 of a storage of 4"),
        "size * stride past the end": (state(("a", tf.Tensor(_storage(), 0, (4, 4), (4, 1)))),
                                       "reaches element 15"),
        "negative stride": (state(("a", tf.Tensor(_storage(), 11, (4,), (-1,)))),
                            "negative tensor stride"),
        "negative offset": (state(("a", tf.Tensor(_storage(), -1, (2,), (1,)))),
                            "bad tensor storage offset -1"),
        "negative size": (state(("a", tf.Tensor(_storage(), 0, (-1,), (1,)))),
                          "negative tensor size"),
        "float size": (state(("a", tf.Tensor(_storage(), 0, (2.0,), (1,)))),
                       "size is not a tuple of ints"),
        "numel larger than the member": (state(("a", tf.tensor(np.zeros(4, np.float32),
                                                               numel=5))),
                                         "holds 16 bytes, 5 x FloatStorage needs 20"),
        "member shorter than numel": (state(("a", tf.tensor(np.zeros(4, np.float32),
                                                            raw=b"\0" * 12))),
                                      "holds 12 bytes, 4 x FloatStorage needs 16"),
        "storage declared twice differently": (state(
            ("a", tf.tensor(np.zeros(2, np.float32), key="0")),
            ("b", tf.tensor(np.zeros(2, np.int32), key="0"))), "two types or sizes"),
        "storage key with ../": (state(("a", tf.tensor(np.zeros(2, np.float32), key="../0")),
                                       members={"archive/data/../0": None}),
                                 "refused storage key '../0'"),
        "storage key with /": (state(("a", tf.tensor(np.zeros(2, np.float32), key="x/0"))),
                               "refused storage key 'x/0'"),
        "storage key naming no member": (state(("a", tf.tensor(np.zeros(2, np.float32),
                                                               key="7")),
                                               members={"archive/data/7": None}),
                                         "has no member 'archive/data/7'"),
        "member name with ..": (state(("a", _good()), members={"archive/../evil": b"x"}),
                                "escapes the archive"),
        "absolute member name": (state(("a", _good()), members={"/tmp/evil": b"x"}),
                                 "escapes the archive"),
        "compressed data.pkl": (state(("a", _good()), compress=("archive/data.pkl",)),
                                "refused compressed member 'archive/data.pkl'"),
        "data.pkl size claim above the cap": (then(state(("a", _good())), lambda p: (
            tf.patch_declared_size(p, "archive/data.pkl", 100 << 20))),
            "declares 104857600 bytes"),
        "bad CRC": (then(plain(("a", _good())), flip_last_storage_byte), "corrupt zip"),
        "truncated zip": (then(state(("a", _good())), lambda p: p.write_bytes(
            p.read_bytes()[:200])), "corrupt zip"),
        "legacy pickle": (file_bytes(legacy), "legacy \\(pre-1.6\\) torch pickle refused"),
        "not a zip": (file_bytes(b"hello world"), "not a zip archive"),
        "no data.pkl": (state(("a", _good()), members={"archive/data.pkl": None}),
                        "no <top>/data.pkl"),
        "two data.pkl": (state(("a", _good()), members={"other/data.pkl": b"\x80\x02N."}),
                         "more than one data.pkl"),
        "big-endian": (state(("a", _good()), byteorder="big"), "byte order b'big'"),
        "top object is a list": (lambda path, payload: tf.write_torch_bin(path, [_good()]),
                                 "expected a state dict"),
        "non-str key": (lambda path, payload: tf.write_torch_bin(path, {1: _good()}),
                        "expected name -> tensor"),
        "value not a tensor": (lambda path, payload: tf.write_torch_bin(path, {"a": 3}),
                               "expected name -> tensor"),
        "cyclic state": (lambda path, payload: tf.write_torch_bin(path, _cyclic()), "cyclic"),
        "QInt8Storage": (state(("a", tf.tensor(np.zeros(2, np.int8),
                                               storage_type="QInt8Storage"))),
                         "refused global torch.QInt8Storage"),
        "made-up storage": (state(("a", tf.tensor(np.zeros(2, np.float32),
                                                  storage_type="EvilStorage"))),
                            "refused global torch.EvilStorage"),
        "backward hooks": (state(("a", tf.Tensor(_storage(), 0, (2,), (1,),
                                                 hooks=collections.OrderedDict(h=1)))),
                           "backward hooks"),
        "requires_grad not a bool": (state(("a", tf.Tensor(_storage(), 0, (2,), (1,),
                                                           requires_grad=1))), "requires_grad"),
        "tensor metadata": (state(("a", tf.Tensor(_storage(), 0, (2,), (1,),
                                                  metadata={"x": 1}))), "metadata"),
        "stride-0 memory bomb": (plain(("a", tf.Tensor(_storage(1), 0, (1 << 20, 1 << 20),
                                                       (0, 0)))), "tensors would take"),
    }


CASE_NAMES = sorted(_cases("m"))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_refused_without_running(tmp_path, case):
    marker = tmp_path / "pwned"
    write, message = _cases(marker)[case]
    path = tmp_path / "pytorch_model.bin"
    write(path, _Reduce(os.system, f"touch {marker}"))
    with pytest.raises(UnsafePickleError, match=message) as caught:
        read_torch_bin(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert not marker.exists()


def test_zip_bomb_is_refused_without_inflating(tmp_path):
    """100 MB of zeros deflate to ~100 KB; the reader refuses from the header alone."""
    path = tf.write_torch_bin(tmp_path / "bomb.bin",
                              {"a": tf.tensor(np.zeros(25 << 20, np.float32), raw=b"")},
                              members={"archive/data/0": bytes(100 << 20)},
                              compress=("archive/data/0",))
    assert path.stat().st_size < 1 << 20
    start = time.perf_counter()
    with pytest.raises(UnsafePickleError, match="refused compressed member 'archive/data/0'"):
        read_torch_bin(path)
    assert time.perf_counter() - start < 2


def test_storage_above_the_cap_is_refused(tmp_path):
    path = tf.write_torch_bin(tmp_path / "m.bin", {"a": np.zeros(512, np.float32)})
    assert read_torch_bin(path, max_storage_bytes=2048)["a"].shape == (512,)
    with pytest.raises(UnsafePickleError, match="declares 2048 bytes \\(the cap is 1024\\)"):
        read_torch_bin(path, max_storage_bytes=1024)


def test_allow_list_is_exactly_the_torch_state_dict_globals():
    assert set(torch_bin.ALLOWED_GLOBALS) == {
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter", "torch.FloatStorage", "torch.DoubleStorage",
        "torch.HalfStorage", "torch.BFloat16Storage", "torch.LongStorage", "torch.IntStorage",
        "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage", "torch.BoolStorage"}
