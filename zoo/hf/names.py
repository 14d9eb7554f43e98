"""HF parameter names -> the zoo's module paths, from a table each architecture brings.

A rule is ``(regex, target)``: the regex matches a whole HF name once the task model's
encoder prefix (``bert.``, ``roberta.``, ...) is stripped; the target is a zoo path in which
the regex's named groups are substituted, and ``{cls}`` is the head the checkpoint's task
head is stored as. A target ending in `` T`` transposes torch's (out, in) Linear weight to
NNX's (in, out) kernel. ``ignored`` names are skipped on purpose and reported as notes.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class NameTable:
    rules: tuple[tuple[str, str], ...]
    ignored: tuple[tuple[str, str], ...] = ()
    prefixes: tuple[str, ...] = ()  # task models' encoder prefix, stripped first
    renames: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    # HF names (after the prefix) that only a bare encoder's pooler has: kept for a head only
    # when the checkpoint also holds a task head, otherwise skipped with a note.
    pooler: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "_compiled", tuple(
            (re.compile(f"^{p}$"), target) for p, target in self.rules))
        object.__setattr__(self, "_ignored", tuple(
            (re.compile(f"^{p}$"), why) for p, why in self.ignored))

    def strip(self, name: str) -> str:
        for prefix in self.prefixes:
            if name.startswith(prefix):
                return name[len(prefix):]
        return name

    def map(self, tensors: Mapping[str, np.ndarray], head: str, *, keep_pooler: bool
            ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
        """(zoo params, HF names with no zoo name, notes on what was skipped on purpose)."""
        params: dict[str, np.ndarray] = {}
        unmapped, notes = [], []
        pooler = re.compile(f"^{self.pooler}") if self.pooler else None
        for raw_name, value in tensors.items():
            name = self.strip(raw_name)
            why = next((why for pattern, why in self._ignored if pattern.match(name)), None)
            if why is None and pooler is not None and pooler.match(name) and not keep_pooler:
                why = "pooler of a bare encoder (a new classification head starts fresh)"
            if why is not None:
                notes.append(f"{raw_name}: skipped ({why})")
                continue
            for pattern, target in self._compiled:
                match = pattern.match(name)
                if match is None:
                    continue
                groups = {k: self.renames.get(k, {}).get(v, v)
                          for k, v in match.groupdict().items()}
                path, _, transpose = target.partition(" ")
                path = path.format(cls=head, **groups)
                array = np.asarray(value)
                if array.dtype.kind == "f" and array.dtype != np.float32:
                    array = array.astype(np.float32)  # half-precision files: float32 params
                if transpose:
                    if array.ndim != 2:
                        unmapped.append(f"{raw_name} {tuple(array.shape)} (expected a matrix)")
                        break
                    array = np.ascontiguousarray(array.T)
                if path in params and np.array_equal(params[path], array):
                    notes.append(f"{raw_name}: skipped (a copy of the tensor for {path})")
                elif path in params:
                    unmapped.append(f"{raw_name} (a second, different tensor for {path})")
                else:
                    params[path] = array
                break
            else:
                unmapped.append(f"{raw_name} {tuple(np.shape(value))}")
        return params, sorted(unmapped), sorted(notes)


_L = r"encoder\.layer\.(?P<i>\d+)\."
# HF's embeddings and ``encoder.layer.N`` blocks as BERT and RoBERTa checkpoints name them ->
# ``zoo.nn.PostLNLayer``'s paths (``gamma``/``beta``: the LayerNorm names of old checkpoints).
POST_LN_RULES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.word_embeddings\.weight", "encoder/embeddings/word/embedding"),
    (r"embeddings\.position_embeddings\.weight", "encoder/embeddings/position/embedding"),
    (r"embeddings\.token_type_embeddings\.weight", "encoder/embeddings/token_type/embedding"),
    (r"embeddings\.LayerNorm\.(weight|gamma)", "encoder/embeddings/norm/scale"),
    (r"embeddings\.LayerNorm\.(bias|beta)", "encoder/embeddings/norm/bias"),
    (_L + r"attention\.self\.(?P<p>query|key|value)\.weight",
     "encoder/layers/{i}/attention/{p}/kernel T"),
    (_L + r"attention\.self\.(?P<p>query|key|value)\.bias",
     "encoder/layers/{i}/attention/{p}/bias"),
    (_L + r"attention\.output\.dense\.weight", "encoder/layers/{i}/attention/output/kernel T"),
    (_L + r"attention\.output\.dense\.bias", "encoder/layers/{i}/attention/output/bias"),
    (_L + r"attention\.output\.LayerNorm\.(weight|gamma)",
     "encoder/layers/{i}/attention_norm/scale"),
    (_L + r"attention\.output\.LayerNorm\.(bias|beta)",
     "encoder/layers/{i}/attention_norm/bias"),
    (_L + r"intermediate\.dense\.weight", "encoder/layers/{i}/intermediate/kernel T"),
    (_L + r"intermediate\.dense\.bias", "encoder/layers/{i}/intermediate/bias"),
    (_L + r"output\.dense\.weight", "encoder/layers/{i}/output/kernel T"),
    (_L + r"output\.dense\.bias", "encoder/layers/{i}/output/bias"),
    (_L + r"output\.LayerNorm\.(weight|gamma)", "encoder/layers/{i}/output_norm/scale"),
    (_L + r"output\.LayerNorm\.(bias|beta)", "encoder/layers/{i}/output_norm/bias"),
)


def untie_decoder(params: dict, config=None, *,
                  embedding: str = "encoder/embeddings/word/embedding") -> None:
    """An MLM decoder tied to the word embeddings gets its own kernel (their transpose)."""
    if "heads/mlm/decoder/bias" in params and embedding in params:
        params["heads/mlm/decoder/kernel"] = np.ascontiguousarray(params[embedding].T)
