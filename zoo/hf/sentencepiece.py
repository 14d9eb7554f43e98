"""SentencePiece model files (``spm.model``) read without the sentencepiece library.

A ``.model`` file is one protobuf message, ``ModelProto`` of sentencepiece_model.proto. Of
it the zoo needs the pieces (field 1: ``piece`` 1, ``score`` 2, ``type`` 3), from the
trainer spec (field 2) the model type (3), ``unk_id`` (40) and ``byte_fallback`` (35), and
from the normaliser spec (field 3) the precompiled character map (2). Every other field is
skipped by its wire type. The file is untrusted: every length is checked against what is
left, varints are at most 10 bytes, piece strings must be UTF-8, scores finite, and a
malformed file is one ``ConfigError`` naming it and the byte offset.

The precompiled character map is checked by ``zoo.text.charsmap_problem`` (the tokenizers
library indexes it unchecked).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterator
from pathlib import Path

from zoo.errors import ConfigError
from zoo.text import charsmap_problem

MAX_BYTES = 256 << 20  # the published models are 2-5 MB
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4
MODEL_TYPES = {UNIGRAM: "unigram", BPE: "bpe", WORD: "word", CHAR: "char"}
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


@dataclasses.dataclass(frozen=True)
class SentencePieceModel:
    pieces: tuple[tuple[str, float, int], ...]  # (piece, score, type) by id
    model_type: int = UNIGRAM
    unk_id: int = 0
    byte_fallback: bool = False
    precompiled_charsmap: bytes = b""


class _Malformed(Exception):
    def __init__(self, what: str, at: int | None = None):
        super().__init__(what if at is None else f"{what} at byte {at}")


def read_model(path: Path) -> SentencePieceModel:
    """The pieces and settings of a SentencePiece ``.model`` file (one line on any defect)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{path}: {size} bytes, more than a SentencePiece model may hold "
                          f"({MAX_BYTES})")
    data = path.read_bytes()
    try:
        return _model(memoryview(data))
    except _Malformed as err:
        raise ConfigError(f"{path}: not a SentencePiece model ({err})") from None


def _model(buf: memoryview) -> SentencePieceModel:
    pieces: list[tuple[str, float, int]] = []
    settings: dict = {}
    for number, wire, value, at in _fields(buf, 0, len(buf)):
        if number == 1:
            pieces.append(_piece(buf, _span(wire, value, at, "piece"), len(pieces)))
        elif number == 2:
            start, end = _span(wire, value, at, "trainer spec")
            settings |= _trainer_spec(buf, start, end)
        elif number == 3:
            start, end = _span(wire, value, at, "normaliser spec")
            for field, kind, item, where in _fields(buf, start, end):
                if field == 2:
                    lo, hi = _span(kind, item, where, "precompiled charsmap")
                    settings["precompiled_charsmap"] = bytes(buf[lo:hi])
                    charsmap = settings["precompiled_charsmap"]  # empty: no map
                    problem = charsmap_problem(charsmap) if charsmap else None
                    if problem:
                        raise _Malformed(f"its precompiled character map {problem}", lo)
    if not pieces:
        raise _Malformed("no pieces", len(buf))
    seen: dict[str, int] = {}
    for index, (piece, _, _) in enumerate(pieces):
        if piece in seen:
            raise _Malformed(f"piece {index} ({piece!r}) repeats piece {seen[piece]}")
        seen[piece] = index
    unk = settings.get("unk_id", 0)
    if not 0 <= unk < len(pieces):
        raise _Malformed(f"unk_id {unk} is not one of the {len(pieces)} pieces")
    return SentencePieceModel(pieces=tuple(pieces), **settings)


def _trainer_spec(buf: memoryview, start: int, end: int) -> dict:
    found: dict = {}
    for number, wire, value, at in _fields(buf, start, end):
        if number == 3:
            found["model_type"] = _int(wire, value, at, "model_type")
        elif number == 40:
            found["unk_id"] = _int(wire, value, at, "unk_id")
        elif number == 35:
            found["byte_fallback"] = bool(_int(wire, value, at, "byte_fallback"))
    return found


def _piece(buf: memoryview, span: tuple[int, int], index: int) -> tuple[str, float, int]:
    text, score, kind = None, 0.0, NORMAL
    for number, wire, value, at in _fields(buf, *span):
        if number == 1:
            lo, hi = _span(wire, value, at, f"piece {index}")
            try:
                text = bytes(buf[lo:hi]).decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed(f"piece {index} is not UTF-8", lo) from None
        elif number == 2:
            if wire != FIXED32:
                raise _Malformed(f"the score of piece {index} is not a float", at)
            score = struct.unpack("<f", value)[0]
            if not math.isfinite(score):
                raise _Malformed(f"piece {index} has the score {score}", at)
        elif number == 3:
            kind = _int(wire, value, at, f"the type of piece {index}")
            if kind not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE):
                raise _Malformed(f"piece {index} has the unknown type {kind}", at)
    if not text:
        raise _Malformed(f"piece {index} is empty", span[0])
    return text, score, kind


def _span(wire: int, value, at: int, what: str) -> tuple[int, int]:
    if wire != LENGTH:
        raise _Malformed(f"{what}: wire type {wire}, expected a length-delimited field", at)
    return value


def _int(wire: int, value, at: int, what: str) -> int:
    if wire != VARINT:
        raise _Malformed(f"{what}: wire type {wire}, expected a varint", at)
    value &= (1 << 64) - 1
    if value >= 1 << 63:  # a negative int32 is sign-extended to 64 bits
        value -= 1 << 64
    if not -(1 << 31) <= value < 1 << 31:
        raise _Malformed(f"{what}: {value} is not an int32", at)
    return value


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, object, int]]:
    """(field number, wire type, value, offset) of one message's fields, in file order: an
    int for a varint, (start, end) for a length-delimited field, bytes for a fixed field."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0", at)
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if end - pos < width:
                raise _Malformed("truncated field", at)
            value, pos = bytes(buf[pos:pos + width]), pos + width
        elif wire == LENGTH:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Malformed(f"a field of {length} bytes where {end - pos} are left", at)
            value, pos = (pos, pos + length), pos + length
        else:  # 3 and 4 are protobuf 1's groups, 6 and 7 do not exist
            raise _Malformed(f"wire type {wire}", at)
        yield number, wire, value, at


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _Malformed("truncated varint", start)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("a varint longer than 10 bytes", start)

