"""The subprocess side of ``test_sharding.py``: work that needs several (simulated) devices.

jax fixes its device count when it starts (``XLA_FLAGS=--xla_force_host_platform_device_count``),
so every device configuration runs in its own process. Each mode computes several results
and writes them under OUT (``results.json`` plus ``.npz`` arrays); the test process asserts.

    python -m zoo_tests.sharding_worker spmd OUT DATA_DIR          (8 devices)
    python -m zoo_tests.sharding_worker four OUT DATA_DIR CRASHED  (4 devices)
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shutil
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from zoo import checkpoint, sharding
from zoo.model import build_model
from zoo.models.bert.modeling import BertConfig
from zoo.nn import Dropout
from zoo.tasks import task_for
from zoo.train import Steps, TrainConfig, make_optimizer

STEPS = 3
TINY_BERT = BertConfig(vocab_size=512, hidden_size=32, num_layers=2, num_heads=4,
                       intermediate_size=64, max_position_embeddings=64)
FAMILIES = ("m2l", "bert", "roberta", "deberta_v2", "modernbert")
# Tiny configs of each HF family's -custom preset (its architecture and options).
TINY = {"bert": ("bert-custom", {}),
        "roberta": ("roberta-custom", {}),
        "deberta_v2": ("deberta-v2-custom", {"position_buckets": 8, "max_relative_positions": 16}),
        "modernbert": ("modernbert-custom", {"layer_types": ("full_attention",
                                                             "sliding_attention"),
                                             "local_attention": 4, "dropout": 0.1,
                                             "attention_dropout": 0.1,
                                             "embedding_dropout": 0.1})}  # trains with dropout here
# Collectives as XLA names them in compiled HLO (``all-gather(`` or the async ``-start(``).
COLLECTIVE = re.compile(r"\b(all-gather|all-reduce|all-to-all|ragged-all-to-all|"
                        r"collective-permute|collective-broadcast|reduce-scatter)(?:-start)?\(")


_START = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr (its tail is what a failing test shows)."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {message}", file=sys.stderr, flush=True)


def collectives(hlo: str) -> dict[str, int]:
    return dict(Counter(COLLECTIVE.findall(hlo)))


def build(family: str, head: str | None = "sst2"):
    if family == "m2l":
        return build_model("encoder-m2l-tiny", head, seed=0)
    if family == "bert":
        return build_model("bert-custom", head, seed=0, config=TINY_BERT)
    from zoo.registry import get_encoder

    name, options = TINY[family]
    config = dataclasses.replace(
        get_encoder(name).config, vocab_size=512, hidden_size=32, num_layers=2, num_heads=4,
        intermediate_size=64, max_position_embeddings=66, max_len=None, **options)
    return build_model(name, head, seed=0, config=config)


def embeddings(family: str, model, ids):
    """The embedding layer alone (its table lookup is what explicit sharding must type)."""
    enc = model.encoder
    if family in ("m2l", "modernbert"):
        return enc.embeddings(ids)
    if family == "deberta_v2":
        return enc.embeddings(ids, jnp.ones_like(ids))
    return enc.embeddings(ids, None)


def make_batch(vocab_size: int, rows: int = 16, length: int = 16) -> dict[str, np.ndarray]:
    """A padded classification batch; the last two rows are filler (weight 0)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab_size, (rows, length)).astype(np.int32)
    mask = np.ones_like(ids)
    for row in range(rows):
        n = int(rng.integers(3, length + 1))
        ids[row, n:], mask[row, n:] = 0, 0
    weights = np.ones(rows, np.float32)
    weights[-2:] = 0.0
    return {"input_ids": ids, "attention_mask": mask,
            "labels": rng.integers(0, 2, rows).astype(np.int32), "weights": weights}


def error_text(err: BaseException) -> str:
    """The exception and the zoo frames it came through, for an assertion message."""
    frames = [f"{f.filename.split('/zoo/')[-1]}:{f.lineno}" for f in
              traceback.extract_tb(err.__traceback__) if "/zoo/" in f.filename]
    return f"{type(err).__name__}: {str(err).splitlines()[0][:300]} (at {', '.join(frames[-3:])})"


# ------------------------------------------------------------------------------ spmd (8 devices)


def train_steps(family: str, mesh, optimizer: str, eval_loss: bool = False) -> dict:
    """``STEPS`` jitted train steps (dropout active) on ``mesh``; losses, params, HLO facts."""
    model = build(family)
    initial = {k: np.asarray(v) for k, v in checkpoint.module_params(model).items()}
    cfg = TrainConfig(optimizer=optimizer, learning_rate=3e-2, warmup_fraction=0.0)
    opt = nnx.Optimizer(model, make_optimizer(cfg, 10), wrt=nnx.Param)
    steps = Steps(model, opt, task_for("classification"), mesh)
    batch = sharding.global_batch(make_batch(model.config.vocab_size), mesh)
    result = {}
    if eval_loss:  # the same batch without dropout: must differ from the training loss
        update, _ = steps.evaluator.step(steps.model_state, batch)
        result["eval_loss"] = float(update.compute()["loss"])
    base = jax.random.key(0)
    compiled = steps.train.lower(steps.model_state, steps.opt_state, batch, base).compile()
    result["collectives"] = collectives(compiled.as_text())
    losses = []
    for step in range(STEPS):
        steps.model_state, steps.opt_state, _, loss = compiled(
            steps.model_state, steps.opt_state, batch, jax.random.fold_in(base, step))
        losses.append(float(loss))
    result["losses"] = losses
    params = checkpoint.module_params(steps.model())
    result["params"] = {k: np.asarray(v) for k, v in params.items()}
    result["moved"] = max(float(np.abs(result["params"][k] - initial[k]).max()) for k in initial)
    result["devices"] = sorted({len(v.sharding.device_set) for v in params.values()})
    result["split_params"] = sorted(k for k, v in params.items()  # held in parts
                                    if v.addressable_shards[0].data.shape != v.shape)
    return result


def dropout_alone(mesh) -> dict:
    """The dropout layer on one input, unsharded and split along ``data``."""
    layer = Dropout(0.3)
    x = np.random.default_rng(1).normal(size=(16, 12, 33)).astype(np.float32)  # odd last axis
    fn = jax.jit(lambda x, key: layer(x, rngs=nnx.Rngs(dropout=key)))
    key = jax.random.key(7)
    plain = np.asarray(fn(jnp.asarray(x), key))
    split = jax.device_put(x, NamedSharding(mesh, P(sharding.DATA)))
    out = fn(split, key)
    return {"identical": bool(np.array_equal(plain, np.asarray(out))),
            "dropped_fraction": float((plain == 0).mean()),
            "out_spec": str(out.sharding.spec),
            "collectives": collectives(fn.lower(split, key).compile().as_text())}


def forwards(mesh, explicit_mesh) -> dict:
    """Embeddings and full forwards under explicit and auto meshes (jitted, and eagerly where
    the mode matters to eager ops), as the largest difference from the unsharded forward, or
    the error they raised."""
    out = {}
    for family in FAMILIES:
        model = build(family)
        batch = make_batch(model.config.vocab_size)
        ids, mask = batch["input_ids"], batch["attention_mask"]

        def embed(ids, model=model, family=family):
            return embeddings(family, model, ids)

        want = {"forward": np.asarray(jax.jit(lambda i, m: model(i, m))(ids, mask)),
                "embeddings": np.asarray(embed(ids))}
        for kind, where in (("explicit", explicit_mesh), ("auto", mesh)):
            with jax.set_mesh(where):
                sids = jax.device_put(ids, NamedSharding(where, P(sharding.DATA)))
                smask = jax.device_put(mask, NamedSharding(where, P(sharding.DATA)))
                cases = {
                    "embeddings/eager": lambda: embed(sids),
                    "embeddings/jit": lambda: jax.jit(embed)(sids),
                    "forward/jit": lambda: jax.jit(lambda i, m: model(i, m))(sids, smask),
                }
                if kind == "explicit":  # eager ops see the explicit shardings in their types
                    cases["forward/eager"] = lambda: model(sids, smask)
                for case, fn in cases.items():
                    name = f"{family}/{kind}/{case}"
                    try:
                        got = fn()
                        out[name] = {"diff": float(np.abs(np.asarray(got)
                                                          - want[case.split("/")[0]]).max()),
                                     "spec": str(got.sharding.spec)}
                    except Exception as err:  # recorded: the test names it
                        out[name] = {"error": error_text(err)}
    return out


def cli_errors(data_dir: str, out: Path) -> dict:
    """The command line with a batch that does not split over ``data=8``, and with a mesh of
    more devices than there are: (exit status, stderr) each."""
    from zoo.cli import main
    from zoo_tests.faults_support import cli_flags

    results = {}
    for name, flags in (("batch_size", ["--batch-size", "12", "--mesh", "data=8"]),
                        ("mesh", ["--mesh", "data=16"])):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["train", *cli_flags(Path(data_dir), optimizer="sgd"), *flags,
                       "--out", str(out / f"bad-{name}")])
        results[name] = {"rc": rc, "stderr": stderr.getvalue()}
    return results


def mode_spmd(out: Path, data_dir: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    one = sharding.make_mesh("data=1", jax.devices()[:1])
    meshes = {"1": one, "data=8": sharding.make_mesh("data=8"),
              "data=4,model=2": sharding.make_mesh("data=4,model=2")}
    results, arrays = {"train": {}}, {}
    for family in FAMILIES:
        for name, mesh in meshes.items():
            r = train_steps(family, mesh, "sgd", eval_loss=name == "1")
            log(f"{family} on {name}: losses {r['losses']}")
            for path, value in r.pop("params").items():
                arrays[f"{family}|{name}|{path}"] = value
            results["train"][f"{family}|{name}|sgd"] = r
    for name in ("1", "data=8"):  # adam: losses only (its update amplifies rounding)
        r = train_steps("m2l", meshes[name], "adam")
        log(f"m2l with adam on {name}: losses {r['losses']}")
        r.pop("params")
        results["train"][f"m2l|{name}|adam"] = r
    results["dropout"] = dropout_alone(meshes["data=8"])
    log("dropout")
    results["forward"] = forwards(meshes["data=8"], sharding.make_mesh("data=8", explicit=True))
    log("forwards")
    results["cli"] = cli_errors(data_dir, out)
    log("command-line errors")
    np.savez(out / "params.npz", **arrays)
    (out / "results.json").write_text(json.dumps(results, indent=1))


# ------------------------------------------------------------------------------ four devices


def mode_four(out: Path, data_dir: str, crashed: str) -> None:
    """Restore an 8-device checkpoint here, resume that run, and train the 4-device reference
    of the two-process run."""
    from zoo.run import make_model, prepare_data, read_run_config, train_run
    from zoo.train import Trainer
    from zoo_tests.faults_support import TRAIN

    assert jax.device_count() == 4, jax.devices()
    results = {}
    # Trainer.restore straight into this mesh's shardings
    check = out / "restore-check"
    shutil.copytree(crashed, check)
    cfg = dataclasses.replace(read_run_config(check), mesh=None)  # all 4 devices
    model = make_model(cfg)
    data = prepare_data(model, cfg)
    trainer = Trainer(model, cfg, check, data.train, data.dev, show_progress=False)
    try:
        assert trainer.restore("latest")
        results["restored_step"] = trainer.progress.step
        flat = checkpoint.state_values(trainer.steps.model_state, "model/") \
            | checkpoint.state_values(trainer.steps.opt_state, "optimizer/")
        results["restored_devices"] = {k: len(v.sharding.device_set) for k, v in flat.items()}
        results["restored_mesh"] = {k: dict(v.sharding.mesh.shape) for k, v in flat.items()}
        np.savez(out / "restored.npz", **{k: np.asarray(v) for k, v in flat.items()})
    finally:
        trainer.close()
    log("restored")
    # resume the crashed run (saved on 8 devices) on all 4 devices here
    resumed = out / "resumed-4"
    shutil.copytree(crashed, resumed)
    results["resumed"] = train_run(TrainConfig(mesh=None), resumed, resume=True,
                                   show_progress=False)
    log("resumed")
    # the one-process reference of the two-process run
    ref = TrainConfig(**{**TRAIN, "data_dir": data_dir, "optimizer": "sgd", "mesh": "data=4"})
    results["reference"] = train_run(ref, out / "one-process-4", show_progress=False)
    log("one-process reference")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    mode, out_dir, *rest = sys.argv[1:]
    {"spmd": mode_spmd, "four": mode_four}[mode](Path(out_dir), *rest)
