"""`python -m zoo.bench --quick` end to end on the tiny preset (needs dm-haiku and SST-2)."""

import json
from pathlib import Path


from benchmarks import bench
from zoo import get_encoder
from zoo.batching import buckets_for

# dm-haiku is a test dependency and the SST-2 files are part of the test fixtures: a missing
# one is a failure, not a skip.
SST2 = bench._data_dir(None) or str(Path(__file__).resolve().parents[2] / "shared/data/SST-2")


def test_quick_bench_end_to_end(tmp_path, capsys):
    runs = tmp_path / "sst2"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "metrics.jsonl").write_text(
        json.dumps({"step": 10, "split": "dev", "accuracy": 0.7, "time": 5.0}) + "\n"
        + json.dumps({"step": 20, "split": "train", "accuracy": 0.9, "time": 9.0}) + "\n"
        + json.dumps({"step": 20, "split": "dev", "accuracy": 0.81, "time": 10.5}) + "\n")
    assert Path(SST2).is_dir(), f"SST-2 test data missing at {SST2}"
    assert bench.main(["--quick", "--out", tmp_path / "out", "--sst2-runs", runs,
                       "--data-dir", SST2]) == 0

    result = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert (tmp_path / "out" / "bench.md").read_text().startswith("# zoo benchmark")
    assert "## Train step" in capsys.readouterr().out
    sections = result["sections"]
    assert set(sections) == set(bench.TITLES)
    for name, section in sections.items():
        numbers = [r.get("median", r.get("value")) for r in section["rows"]]
        numbers = [x for x in numbers if isinstance(x, (int, float))]
        assert numbers and all(x > 0 for x in numbers), (name, section["rows"])
    reached = sections["time_to_accuracy"]["rows"][0]
    assert reached["value"] == 10.5 and reached["met"]
    compiled = next(r for r in sections["epoch"]["rows"] if r["measure"].startswith("compiled"))
    buckets = buckets_for(get_encoder(bench.QUICK.model).config.max_len)
    assert 0 < compiled["value"] <= len(buckets) and compiled["met"]
    assert result["header"]["device"] and result["header"]["versions"]["dm-haiku"]
