"""Convert a pickled Haiku ``TrainingState`` of the M2L 2022 tutorial into zoo parameters.

The command line is ``python -m convert.haiku_to_flax`` (a thin wrapper over ``convert_file``).
The pickle is read by ``haiku_pickle`` (allow-listed globals, no haiku/jax/optax
import). Parameters are mapped by *name* through ``HAIKU_TO_ZOO`` (never by position: a
state that went through ``jax.jit`` has sorted keys), checked against the abstract target
model (missing, unexpected, mis-shaped and unmappable keys in one report), and written
with ``zoo.checkpoint.save_model_dir``. The optimizer state (Adam ``mu``/``nu``/``count``)
is ignored: the zoo stores parameters only, and fine-tuning starts a fresh optimizer.

The head is recognised from the module names: ``dec_lin_1``/``dec_norm``/``dec_lin_2`` is
the masked-LM head (stored as ``mlm``); top-level ``linear``/``layer_norm``/``linear_1`` is
the ``[CLS]`` classifier (stored as ``--head``, default ``sst2``; the number of classes
comes from the final kernel).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np

from zoo import checkpoint
from zoo.model import expected_params
from zoo.models.m2l.haiku_pickle import load_checkpoint
from zoo.registry import Converted, get_encoder, get_head

CONVERTER_VERSION = "1"
DEFAULT_MODEL = "encoder-mlm-v1"
DEFAULT_CLASSIFIER_HEAD = "sst2"

# The one mapping table: Haiku module -> zoo module path. ``{i}`` is the block index
# (Haiku names block 0 ``encoder_block`` and block i ``encoder_block_i``); ``{head}`` is
# the name the head is stored under.
_BLOCK = "transformer_encoder/~/encoder_block{suffix}/~/"
HAIKU_TO_ZOO = {
    "embeddings/~/embed": "encoder/embed",
    _BLOCK + "multihead_attention/~/linear": "encoder/blocks/{i}/attention/query",
    _BLOCK + "multihead_attention/~/linear_1": "encoder/blocks/{i}/attention/key",
    _BLOCK + "multihead_attention/~/linear_2": "encoder/blocks/{i}/attention/value",
    _BLOCK + "multihead_attention/~/linear_3": "encoder/blocks/{i}/attention/output",
    _BLOCK + "layer_norm": "encoder/blocks/{i}/attention_norm",
    _BLOCK + "positionwise_feed_forward/~/linear": "encoder/blocks/{i}/feed_forward/inner",
    _BLOCK + "positionwise_feed_forward/~/linear_1": "encoder/blocks/{i}/feed_forward/outer",
    _BLOCK + "layer_norm_1": "encoder/blocks/{i}/feed_forward_norm",
    "dec_lin_1": "heads/{head}/dense",  # masked-LM head
    "dec_norm": "heads/{head}/norm",
    "dec_lin_2": "heads/{head}/decoder",
    "linear": "heads/{head}/dense",  # [CLS] classification head
    "layer_norm": "heads/{head}/norm",
    "linear_1": "heads/{head}/classifier",
}
# Haiku parameter -> NNX parameter (hk.Linear w/b, hk.LayerNorm scale/offset, hk.Embed).
PARAM_NAMES = {"w": "kernel", "b": "bias", "scale": "scale", "offset": "bias",
               "embeddings": "embedding"}
HEAD_MODULES = {"mlm": ("dec_lin_1", "dec_norm", "dec_lin_2"),
                "classification": ("linear", "layer_norm", "linear_1")}


def _module_patterns() -> list[tuple[re.Pattern, str]]:
    patterns = []
    for haiku, zoo_path in HAIKU_TO_ZOO.items():
        regex = re.escape(haiku).replace(re.escape("{suffix}"), r"(?:_(?P<i>[1-9]\d*))?")
        patterns.append((re.compile(f"^{regex}$"), zoo_path))
    return patterns


_PATTERNS = _module_patterns()


def detect_heads(params: Mapping[str, Mapping]) -> tuple[str, ...]:
    """The kinds of head whose modules appear in the checkpoint."""
    return tuple(kind for kind, modules in HEAD_MODULES.items()
                 if any(module in params for module in modules))


def map_params(
    params: Mapping[str, Mapping[str, np.ndarray]], head_names: Mapping[str, str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """({zoo path: array}, [Haiku keys the table cannot map]); ``head_names``: kind -> name."""
    module_kind = {m: kind for kind, modules in HEAD_MODULES.items() for m in modules}
    converted, unmapped = {}, []
    for module, leaves in params.items():
        target = None
        for pattern, zoo_path in _PATTERNS:
            match = pattern.match(module)
            if match:
                head = head_names.get(module_kind.get(module, ""), "")
                target = zoo_path.format(i=int(match.groupdict().get("i") or 0), head=head)
                break
        for name, value in leaves.items():
            if target is None or name not in PARAM_NAMES:
                unmapped.append(f"{module}/{name} {tuple(value.shape)}")
            else:
                converted[f"{target}/{PARAM_NAMES[name]}"] = value
    return converted, sorted(unmapped)


def _head_names(kinds: tuple[str, ...], head: str | None) -> dict[str, str]:
    """The name each detected head is stored under; ``head`` renames the one of its kind."""
    names = {"mlm": "mlm", "classification": DEFAULT_CLASSIFIER_HEAD}
    if head is not None:
        kind = get_head(head).kind
        if kind not in kinds:
            raise ValueError(
                f"--head {head} is a {kind} head, but the checkpoint holds "
                f"{', '.join(kinds) or 'no head'}"
            )
        names[kind] = head
    return {kind: names[kind] for kind in kinds}


def _check(expected, converted, unmapped: list[str], source: str) -> None:
    """One report for everything wrong: missing, unexpected, mis-shaped, unmappable."""
    checkpoint.check_tree(expected, converted, source=source, unmapped=unmapped,
                          unmapped_title="Haiku keys with no zoo name")


def convert_pickle(
    path: str | Path,
    tokenizer: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    head: str | None = None,
) -> Converted:
    """Read a pickled Haiku training state safely and map it onto ``model``'s parameters."""
    spec = get_encoder(model)
    params, info = load_checkpoint(path)
    kinds = detect_heads(params)
    names = _head_names(kinds, head)
    converted, unmapped = map_params(params, names)

    heads_manifest, num_classes = {}, {}
    for kind, name in names.items():
        if kind == "mlm":
            heads_manifest[name], num_classes[name] = {"kind": "mlm"}, None
            continue
        kernel = params.get("linear_1", {}).get("w")
        n = int(kernel.shape[-1]) if kernel is not None else get_head(name).num_classes
        heads_manifest[name] = {"kind": "classification", "num_classes": n,
                                "labels": list(get_head(name).label_names(n))}
        num_classes[name] = n

    _check(expected_params(model, num_classes), converted, unmapped,
           source=f"{info.file} (as {model})")
    tok = None
    if tokenizer is not None:
        from zoo.text import read_tokenizer_file

        tok = read_tokenizer_file(Path(tokenizer))
    return Converted(
        model=model, config=spec.config, params=converted, heads=heads_manifest,
        default_head=names.get("classification") or names.get("mlm"), tokenizer=tok,
        source={"file": info.file, "sha256": info.sha256, "kind": "haiku-training-state",
                "converter_version": CONVERTER_VERSION},
    )


def convert_file(
    path: str | Path,
    out: str | Path | None = None,
    tokenizer: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    head: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a pickled Haiku training state into a model directory; return its path.

    ``out`` defaults to ``zoo.weights_store() / model``, where ``zoo.load(model)`` finds it.
    """
    from zoo.hub import weights_store

    result = convert_pickle(path, tokenizer=tokenizer, model=model, head=head)
    out = Path(out) if out is not None else weights_store() / model
    return checkpoint.save_converted(out, result, overwrite=overwrite)
