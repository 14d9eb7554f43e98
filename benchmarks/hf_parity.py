"""The zoo against transformers' own forward, on checkpoints transformers writes (``nox -s parity``).

For each family with a module in ``benchmarks/parity/`` (BERT, RoBERTa / XLM-R, DeBERTa-v2,
ModernBERT), that module writes small random-weight checkpoints of every task class with
``save_pretrained`` (safetensors, and ``pytorch_model.bin`` where it says), tokenizer beside.
Each folder is then read twice, independently:

- by transformers: ``AutoTokenizer`` and the ``AutoModel...`` class named in ``config.json``;
- by the zoo: ``zoo.load(folder)`` (no torch involved).

Compared, in float32: the last hidden state (bare encoders) or the task head's logits, at real
tokens only, on SST-2 dev sentences in padded batches; max |diff| must be at most
``1e-5 * max(1, max |transformers' output|)``. The token ids (and token types) of the whole
SST-2 dev set, and of MRPC dev pairs, must be identical. One Markdown table is written
(``--table``); the exit status is 1 when any row fails. ``--golden DIR`` also (re)writes the
tiny golden folders the test suite checks without torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FAMILIES = ("bert", "roberta", "deberta_v2", "modernbert")
TOLERANCE = 1e-5
HEADS = {  # the task suffix of config.json's architectures -> the transformers Auto class
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForMaskedLM": "AutoModelForMaskedLM",
}


def log(message: str) -> None:
    print(f"[parity] {message}", file=sys.stderr, flush=True)


def sst2_dev() -> list[str]:
    lines = (DATA / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines]


def mrpc_dev_pairs(limit: int = 200) -> tuple[list[str], list[str]]:
    lines = (DATA / "MRPC" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:limit + 1]
    rows = [line.split("\t") for line in lines]
    return [r[3] for r in rows], [r[4] for r in rows]


def auto_class(folder: Path) -> tuple[str, str]:
    """(transformers Auto class, task) for a folder, from its config.json architectures."""
    config = json.loads((folder / "config.json").read_text())
    name = (config.get("architectures") or ["Model"])[0]
    for suffix, auto in HEADS.items():
        if name.endswith(suffix):
            return auto, suffix.removeprefix("For")
    return "AutoModel", "Model"


def token_ids(zoo_model, hf_tokenizer, texts, pairs=None) -> tuple[int, int, str]:
    """(identical rows, rows, first difference) of the zoo's and transformers' encodings."""
    from zoo.text import encode_texts

    max_len = zoo_model.info.input_len
    ours = encode_texts(zoo_model.tokenizer, texts, pairs, max_len)
    theirs = hf_tokenizer(texts, pairs, truncation=True, max_length=max_len)
    uses_types = "token_type_ids" in theirs and (zoo_model.config.type_vocab_size or 0) >= 2
    same, first = 0, ""
    for i, encoded in enumerate(ours):
        equal = encoded.ids == theirs["input_ids"][i] and (
            not uses_types or encoded.type_ids == theirs["token_type_ids"][i])
        same += equal
        if not equal and not first:
            first = f"row {i}: zoo {encoded.ids[:12]}... vs {theirs['input_ids'][i][:12]}..."
    return same, len(ours), first


def batches(model, texts, batch_size=16):
    """(ids, mask, types) int64 batches padded to their longest row, as the zoo encodes."""
    from zoo.inference import pad_encoded
    from zoo.text import encode_texts, special_ids

    for start in range(0, len(texts), batch_size):
        encoded = encode_texts(model.tokenizer, texts[start:start + batch_size], None,
                               model.info.input_len)
        longest = max(len(e.ids) for e in encoded)
        ids, mask, types = pad_encoded(encoded, [longest], special_ids(model.tokenizer)["pad"],
                                       len(encoded), True)
        yield (np.asarray(ids, np.int64), np.asarray(mask, np.int64),
               np.asarray(types, np.int64))


def compare(folder: Path, texts: list[str], batch_size: int = 16) -> dict:
    import torch
    import transformers

    import zoo
    from zoo.hf.files import weights_file
    from zoo.inference import uses_token_types

    auto, task = auto_class(folder)
    theirs = getattr(transformers, auto).from_pretrained(str(folder)).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = zoo.load(str(folder))
    same, total, first = token_ids(ours, hf_tokenizer, texts)
    a, b = mrpc_dev_pairs()
    same_pairs, total_pairs, first_pair = token_ids(ours, hf_tokenizer, a, b)
    types = uses_token_types(ours.config)
    diff, scale = 0.0, 0.0
    for ids, mask, type_ids in batches(ours, texts, batch_size):
        kwargs = {"token_type_ids": torch.tensor(type_ids, dtype=torch.long)} if types else {}
        with torch.no_grad():
            out = theirs(input_ids=torch.tensor(ids, dtype=torch.long),
                         attention_mask=torch.tensor(mask, dtype=torch.long), **kwargs)
        reference = (out.last_hidden_state if task == "Model" else out.logits).numpy()
        if task == "Model":
            got = np.asarray(ours.encoder(ids, mask, type_ids) if types
                             else ours.encoder(ids, mask))
        else:
            got = np.asarray(ours(ids, mask, type_ids if types else None))
        if reference.ndim == 3:  # per token: real tokens only
            keep = mask.astype(bool)
            reference, got = reference[keep], got[keep]
        diff = max(diff, float(np.max(np.abs(got - reference))))
        scale = max(scale, float(np.max(np.abs(reference))))
    limit = TOLERANCE * max(1.0, scale)
    return {"task": task, "zoo head": ours.info.head or "(encoder)",
            "weights": weights_file(folder).name,
            "max |diff|": diff, "scale": scale,
            "token ids": f"{same}/{total}", "pair ids": f"{same_pairs}/{total_pairs}",
            "ok": diff <= limit and same == total and same_pairs == total_pairs,
            "first difference": first or first_pair}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hf_parity",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="benchmarks/results/parity-cpu.md")
    parser.add_argument("--only", help="comma-separated families (default: all)")
    parser.add_argument("--sentences", type=int, default=256,
                        help="SST-2 dev sentences run through both forwards (token ids are "
                             "checked on all of them)")
    parser.add_argument("--golden", type=Path, help="also write the golden folders here "
                                                    "(zoo_tests/golden)")
    parser.add_argument("--keep", type=Path, help="write the checkpoints here, not to a "
                                                  "temporary folder")
    args = parser.parse_args(argv)
    families = args.only.split(",") if args.only else list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"--only: unknown families {', '.join(unknown)} "
                     f"(known: {', '.join(FAMILIES)})")

    import torch
    import transformers

    import zoo
    from benchmarks.bert_bench import machine
    from zoo.fsutil import atomic_write_text
    from zoo.report import markdown_table

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    texts = sst2_dev()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for family in families:
            module = importlib.import_module(f"benchmarks.parity.{family}")
            if args.golden is not None and hasattr(module, "write_golden"):
                written = module.write_golden(args.golden)
                log(f"{family}: {len(written)} golden folders in {args.golden}")
            for label, folder in module.checkpoints(root / family):
                started = time.perf_counter()
                row = {"family": family, "checkpoint": label}
                try:
                    row |= compare(folder, texts[:args.sentences])
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        all_ids = token_ids(zoo.load(str(folder)), transformers.AutoTokenizer
                                            .from_pretrained(str(folder)), texts)
                except Exception as err:  # a row that fails, not a crash of the whole table
                    row |= {"task": auto_class(folder)[1], "max |diff|": float("nan"),
                            "scale": float("nan"), "ok": False, "pair ids": "-",
                            "first difference": f"{type(err).__name__}: {err}"[:300]}
                    all_ids = (0, len(texts))
                row["token ids"] = f"{all_ids[0]}/{all_ids[1]}"
                row["ok"] = row["ok"] and all_ids[0] == all_ids[1]
                log(f"{label}: max |diff| {row['max |diff|']:.2e} (scale {row['scale']:.2f}), "
                    f"ids {row['token ids']}, pairs {row['pair ids']}"
                    f"{'' if row['ok'] else '  FAIL ' + row['first difference']}"
                    f" [{time.perf_counter() - started:.1f} s]")
                rows.append(row)
    for row in rows:
        row["max |diff|"] = f"{row['max |diff|']:.1e}"
        row["scale"] = f"{row['scale']:.2f}"
        row["ok"] = "yes" if row["ok"] else "**NO**"
    info = machine()
    text = (
        "# The zoo against transformers' own forward\n\n"
        f"`nox -s parity` on {info['cpu']} ({info['usable_cores']} cores); torch {torch.__version__}, "
        f"transformers {transformers.__version__}. Random-weight checkpoints written by "
        "transformers' `save_pretrained`, read by `zoo.load` (no torch) and by transformers. "
        f"Outputs: float32, real tokens of {args.sentences} SST-2 dev sentences in padded "
        f"batches of 16; pass when max |diff| <= {TOLERANCE:g} * max(1, scale). Token ids: "
        "the whole SST-2 dev set and 200 MRPC dev pairs, identical to transformers' "
        "tokenizer.\n\n"
        + markdown_table(rows, ["family", "checkpoint", "task", "zoo head", "weights",
                                "max |diff|", "scale", "token ids", "pair ids", "ok"]) + "\n")
    atomic_write_text(Path(args.table), text)
    log(f"wrote {args.table}")
    failed = [r["checkpoint"] for r in rows if r["ok"] != "yes"]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
