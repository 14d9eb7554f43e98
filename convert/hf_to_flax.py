"""Convert a HuggingFace checkpoint (any registered architecture) into a zoo model directory, without torch.

    python -m convert.hf_to_flax DIR_OR_HUB_ID [--model PRESET] [--head NAME] [--out DIR]

``DIR`` is a folder with ``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
and ``tokenizer.json`` or ``vocab.txt``; a hub id (``owner/name``) is downloaded first
(only those files). ``.bin`` files are read by an allow-listed reader, never ``pickle.load``.
A thin command line over ``zoo.hf.convert_folder``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convert._cli import add_output_args, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert.hf_to_flax",
        description="Convert a HuggingFace checkpoint (BERT, RoBERTa, DeBERTa, ModernBERT families) into a zoo model "
                    "directory (no torch needed).")
    parser.add_argument("source", help="an HF checkpoint folder, or a hub id such as "
                                       "sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--model", help="registered preset to load it as (default: the preset "
                                        "with the same hub id or shape, else <type>-custom)")
    parser.add_argument("--head", help="name for a classifier the checkpoint holds "
                                       "(default: the preset's, else 'classifier')")
    add_output_args(parser, "the weights store, under the preset")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def work():
        from zoo import checkpoint
        from zoo.errors import InvalidArgumentError
        from zoo.fsutil import check_output
        from zoo.hub import weights_store
        from zoo.hf import convert_folder, download

        if args.out is not None:  # refuse a bad --out before any download or conversion
            check_output(args.out, overwrite=args.overwrite, owned=checkpoint.is_model_dir,
                         what="a zoo model directory")
        folder = Path(args.source).expanduser()
        if not folder.exists():
            if args.source.count("/") != 1 or args.source.startswith((".", "/", "~")):
                raise InvalidArgumentError(f"{args.source}: no such folder, and not a hub id "
                                           "of the form owner/name")
            folder = download(args.source, weights_store() / ".downloads" / args.source)
        converted = convert_folder(folder, args.model, args.head)
        out = args.out or weights_store() / converted.model
        for note in converted.notes:
            print(f"  note: {note}", file=sys.stderr)
        return checkpoint.save_converted(out, converted, overwrite=args.overwrite)

    return run(work, source=args.source)


if __name__ == "__main__":
    sys.exit(main())
