"""Convert a pickled Haiku ``TrainingState`` of the M2L 2022 tutorial into a zoo model directory.

    python -m convert.haiku_to_flax v1_mlm_train_state_362000.pkl \\
        --tokenizer v1_en_tokenizer_1M.json [--model encoder-mlm-v1] [--head sst2] [--out DIR]

A thin command line over ``zoo.models.m2l.convert`` (allow-listed unpickling, one name table,
a strict report); see that module for what is checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convert._cli import add_output_args, run
from zoo.models.m2l.convert import DEFAULT_CLASSIFIER_HEAD, DEFAULT_MODEL, convert_file


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert.haiku_to_flax",
        description="Convert a pickled Haiku TrainingState (M2L 2022) into a zoo model directory.",
    )
    parser.add_argument("checkpoint", type=Path, help="the .pkl training state")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json to store alongside")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registered encoder preset")
    parser.add_argument("--head", help=f"name for the checkpoint's head (classifier default: "
                                       f"{DEFAULT_CLASSIFIER_HEAD})")
    add_output_args(parser, "the weights store")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def work():
        if args.tokenizer is not None and not args.tokenizer.is_file():
            raise FileNotFoundError(f"--tokenizer {args.tokenizer}: file not found")
        return convert_file(args.checkpoint, out=args.out, tokenizer=args.tokenizer,
                            model=args.model, head=args.head, overwrite=args.overwrite)

    return run(work, source=args.checkpoint.name)


if __name__ == "__main__":
    sys.exit(main())
