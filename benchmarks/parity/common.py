"""What the families' parity modules share: the SST-2 sentences their tokenizers train on,
the perturbation that makes misplaced tensors show, the golden-file writer and the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np

SST2_TRAIN = Path(__file__).resolve().parents[2].parent / "shared/data/SST-2/train.tsv"


def sentences(limit: int | None = None) -> list[str]:
    lines = SST2_TRAIN.read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0].strip() for line in lines]
    return texts[:limit] if limit else texts


def perturb(model, generator, norms: tuple[str, ...] = ("LayerNorm.weight",)) -> None:
    """LayerNorm weights (names ending in ``norms``) ~ 1 + N(0, 0.3), every bias ~ N(0, 0.1):
    transformers initialises them to 1 / 0, which would hide a misplaced tensor."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(norms):
                param.copy_(1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)


def save_expected(folder: Path, batch, result, task: str, texts, *,
                  positions: Callable[[np.ndarray], np.ndarray], **extra) -> None:
    """``expected.npz``: transformers' inputs and outputs (MLM logits at ``positions`` only:
    the full (B, S, vocab) array would be most of the bytes)."""
    output = (result.last_hidden_state if task == "base" else result.logits).numpy()
    mask = batch["attention_mask"].numpy().astype(np.int32)
    if task == "mlm":
        extra["positions"] = positions(mask)
        output = output[extra["positions"][:, 0], extra["positions"][:, 1]]
    np.savez_compressed(
        folder / "expected.npz", input_ids=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=mask, output=output.astype(np.float32), **extra,
        sentences=np.array(texts), task=np.array(task))


def cli(doc: str, checkpoints, write_golden) -> None:
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("what", choices=("checkpoints", "golden"))
    parser.add_argument("root", type=Path)
    args = parser.parse_args()
    if args.what == "golden":
        for path in write_golden(args.root):
            print(path)
    else:
        for label, path in checkpoints(args.root):
            print(label, path)
