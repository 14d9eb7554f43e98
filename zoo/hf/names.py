"""HF parameter names -> the zoo's module paths, from a table each architecture brings.

A rule is ``(regex, target)``: the regex matches a whole HF name once the task model's
encoder prefix (``bert.``, ``roberta.``, ...) is stripped; the target is a zoo path in which
the regex's named groups are substituted, and ``{cls}`` is the head the checkpoint's task
head is stored as. A target ending in `` T`` reverses the axes: torch's (out, in) Linear
weight to NNX's (in, out) kernel, and its (out, in / groups, k) Conv1d weight to NNX's
(k, in / groups, out). ``ignored`` names are skipped on purpose and reported as notes.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Mapping

import numpy as np

from zoo.errors import ConfigError


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
                    if array.ndim not in (2, 3):
                        unmapped.append(f"{raw_name} {tuple(array.shape)} (expected a matrix "
                                        "or a convolution kernel)")
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


MLM_DECODER = "heads/mlm/decoder"


def resolve_decoder(params: dict, staged: str | None = None, hf_name: str = "", *,
                    embedding: str = "encoder/embeddings/word/embedding") -> list[str]:
    """The MLM decoder as transformers applies it, from whichever copies a file holds (edits
    ``params`` in place; returns notes on what it dropped).

    A tied decoder (the default) is the word-embedding table: transformers 5 files leave it
    out, 4.x ``.bin`` files hold an equal copy. Where the decoder's bias is tied to another
    tensor of the head (``staged``: where the name table put that one; ``hf_name``: its HF
    name), a file holds either or both. An untied head (``tie_word_embeddings`` false) is
    stored whole, and that other bias is then a separate tensor transformers never reads
    (but still loads: one of another shape than the decoder's is refused, as transformers
    refuses it, with a ``ConfigError`` naming ``hf_name``)."""
    notes = []
    bias = params.pop(staged, None) if staged else None
    if bias is not None:
        own = params.get(f"{MLM_DECODER}/bias")
        if own is None:
            params[f"{MLM_DECODER}/bias"] = bias
        elif np.shape(own) != np.shape(bias):
            raise ConfigError(f"{hf_name} has shape {tuple(np.shape(bias))}, but the MLM "
                              f"decoder's bias has {tuple(np.shape(own))}")
        elif not np.array_equal(np.asarray(own), np.asarray(bias)):
            notes.append(f"{hf_name}: skipped (unused: the untied decoder has its own bias)")
    if embedding in params and f"{MLM_DECODER}/kernel" not in params \
            and any(name.startswith("heads/mlm/") for name in params):
        params[f"{MLM_DECODER}/kernel"] = np.ascontiguousarray(np.asarray(params[embedding]).T)
    return notes


# ------------------------------------------------------------------------ zoo -> HF (export)


def regex_template(regex: str) -> str:
    """The HF name a rule's regex matches, as a ``str.format`` template: a named group
    becomes ``{name}``, an unnamed group its first alternative (``(weight|gamma)`` ->
    ``weight``), an optional group (``(decoder\\.)?``) nothing, and escapes their character.
    Rules use only these forms; anything else is refused (the rule cannot be inverted)."""
    out, i = [], 0
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            out.append(regex[i + 1])
            i += 2
        elif char == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(regex[j], 0)
                j += 1
            body = regex[i + 1:j - 1]
            optional = j < len(regex) and regex[j] == "?"
            if body.startswith("?P<"):
                out.append("{" + body[3:body.index(">")] + "}")
            elif not optional:
                out.append(regex_template(_first_alternative(body)))
            i = j + 1 if optional else j
        elif char in "[]*+?{}|^$.":
            raise ValueError(f"rule {regex!r}: {char!r} cannot be written back as a name")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _first_alternative(body: str) -> str:
    depth = 0
    for k, char in enumerate(body):
        if char == "\\":
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0 and (k == 0 or body[k - 1] != "\\"):
            return body[:k]
    return body


def _path_pattern(target: str, head: str) -> re.Pattern:
    """A regex over zoo paths for a rule's target (``{cls}`` is ``head``)."""
    parts = re.split(r"(\{\w+\})", target)
    regex = "".join(re.escape(head) if p == "{cls}" else
                    f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p)
                    for p in parts)
    return re.compile(f"^{regex}$")


def hf_names(table: NameTable, path: str, head: str) -> list[tuple[str, bool]]:
    """Every HF name (after the task prefix) a zoo path could have come from, in the table's
    order, each with whether its tensor is transposed. A candidate is kept only when the
    forward rule maps it back to ``path`` (group values and renames included)."""
    found = []
    for (pattern, target), (regex, _) in zip(table._compiled, table.rules):
        zoo_path, _, transpose = target.partition(" ")
        match = _path_pattern(zoo_path, head).match(path)
        if match is None:
            continue
        choices = []  # a group's HF value: the zoo's, or what a rename maps to it
        for key, value in match.groupdict().items():
            back = [hf for hf, zoo in table.renames.get(key, {}).items() if zoo == value]
            choices.append([(key, v) for v in dict.fromkeys([value, *back])])
        for values in itertools.product(*choices):
            try:
                name = regex_template(regex).format(**dict(values))
            except (KeyError, ValueError):
                continue
            forward = pattern.match(name)
            if forward is None:
                continue
            groups = {k: table.renames.get(k, {}).get(v, v)
                      for k, v in forward.groupdict().items()}
            if zoo_path.format(cls=head, **groups) == path:
                found.append((name, bool(transpose)))
    return found
