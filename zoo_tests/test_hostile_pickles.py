"""Hostile pickles are refused before their payload can run.

Each payload would create ``marker`` if executed; the tests check the error and that the
marker does not exist.
"""

import io
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.models.m2l.haiku_pickle import MAX_DEPTH, UnsafePickleError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch(marker) -> str:
    return f"touch {marker}"


def _cases(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, text the error must contain)."""
    command = _touch(marker).encode()
    opening = f"open({str(marker)!r}, 'w')"
    persistent = io.BytesIO()
    pickler = pickle.Pickler(persistent, protocol=2)
    pickler.persistent_id = lambda obj: "payload" if obj == "x" else None
    pickler.dump(["x"])
    return {
        "os.system via REDUCE": (b"cos\nsystem\n(S'" + command + b"'\ntR.", "os.system"),
        "posix.system, protocol 4": (
            pickle.dumps(_Reduce(os.system, _touch(marker)), protocol=4), "refused global"),
        "builtins.eval": (pickle.dumps(_Reduce(eval, opening), protocol=3), "builtins.eval"),
        "subprocess.Popen": (
            b"csubprocess\nPopen\n((S'touch'\nS'" + str(marker).encode() + b"'\nltR.",
            "subprocess.Popen"),
        "payload nested in params": (pickle.dumps(
            ({"linear": {"w": np.zeros(2, np.float32), "b": _Reduce(os.system, _touch(marker))}},
             ()), protocol=3), "refused global"),
        "forbidden __main__ name": (b"c__main__\nEvil\n)R.", "__main__.Evil"),
        "object-dtype array": (pickle.dumps(
            np.array([_Reduce(os.system, _touch(marker))], dtype=object), protocol=2), "dtype"),
        "numpy.ndarray called directly": (pickle.dumps(_Reduce(
            np.ndarray, (4,), "f4", b"\0" * 16), protocol=2), "malformed"),
        "PERSID": (b"(lp0\nPpayload\na.", "persistent id"),
        "BINPERSID": (persistent.getvalue(), "persistent id"),
        "EXT1": (b"\x80\x02\x82\x01)R.", "extension code"),
        "EXT2": (b"\x80\x02\x83\x01\x00)R.", "extension code"),
        "EXT4": (b"\x80\x02\x84\x01\x00\x00\x00)R.", "extension code"),
        "INST": (b"(S'" + command + b"'\nios\nsystem\n.", "INST"),
        "OBJ": (b"\x80\x02cos\nsystem\nq\x00(h\x00S'" + command + b"'\no.", "OBJ"),
        "huge BINBYTES8": (b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"x.", "length field"),
        "huge BINUNICODE": (b"\x80\x02X" + struct.pack("<I", 2**31) + b"x.", "length field"),
        "huge LONG4": (b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"x.", "length field"),
        "deep MARK nesting": (b"\x80\x02" + b"(" * 100_000 + b")" + b"t" * 100_000 + b".",
                              "nesting"),
        "deep TUPLE1 nesting": (b"\x80\x02N" + b"\x85" * 100_000 + b".", "nesting"),
        "deep list nesting": (b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".", "nesting"),
        "cyclic list": (b"\x80\x02]q\x00h\x00a.", "cyclic"),
        "no STOP": (b"\x80\x02N", "malformed"),
    }


CASE_NAMES = sorted(_cases(Path("m")))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_refused_without_running(tmp_path, case):
    marker = tmp_path / "pwned"
    data, message = _cases(marker)[case]
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=message):
        load_checkpoint(path)
    assert not marker.exists()


def test_wrong_byte_count_is_refused(tmp_path):
    """An allow-listed array whose raw bytes do not fill its shape."""
    data = pickle.dumps(np.zeros(4, np.float32), protocol=3)  # protocol 3: no frames to fix
    good, short = b"C\x10" + b"\0" * 16, b"C\x0c" + b"\0" * 12  # SHORT_BINBYTES raw data
    assert data.count(good) == 1
    (tmp_path / "short.pkl").write_bytes(data.replace(good, short))
    with pytest.raises(UnsafePickleError, match="needs 16 bytes, the file holds 12"):
        load_checkpoint(tmp_path / "short.pkl")


def test_deep_nesting_limit_is_generous_enough_for_checkpoints():
    assert MAX_DEPTH >= 16


def test_cli_refuses_with_one_line_error(tmp_path):
    marker = tmp_path / "pwned"
    data, _ = _cases(marker)["os.system via REDUCE"]
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "convert.haiku_to_flax", str(path), "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: refused global os.system"]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_reading_a_real_state_imports_no_haiku(tmp_path):
    """The reader works from the bytes alone (the 2022 jax modules no longer exist anyway).

    jax, flax and optax are dependencies the zoo package imports itself; haiku, whose
    classes the pickle names, must never be imported."""
    import zoo
    from zoo_tests import haiku_reference as hr

    params = hr.reference_params(zoo.get_encoder("encoder-m2l-tiny").config, "mlm")[2]
    path = hr.write_2022_pickle(tmp_path / "state.pkl", hr.make_training_state(params),
                                "jax-0.4.20", 4)
    script = (
        "import sys; from zoo.models.m2l.haiku_pickle import load_checkpoint; "
        f"params, info = load_checkpoint({str(path)!r}); assert len(params) == {len(params)}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'haiku'}))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
