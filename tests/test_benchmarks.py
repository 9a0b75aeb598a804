"""The benchmark scripts run and report what they promise (tiny sizes; no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_bench_train_step_both_pools_two_processes_and_reports_the_ratio():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train_step.py"), "--implementation", "both",
         "--backbone", "resnet50", "--source_size", "65", "81", "--target_size", "49", "65",
         "--threads", "1", "--warmup", "1", "--iterations", "2", "--device", "cpu"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    rows = json_lines(result.stdout)
    assert [row["implementation"] for row in rows] == ["ours", "reference"]
    for row in rows:
        assert row["allocator"] == "keep"
        assert row["s_per_iter_median"] > 0 and row["peak_memory_mb"] > 0
        ratio = rows[0]["s_per_iter_median"] / rows[1]["s_per_iter_median"]
        assert abs(row["ours_over_reference"] - ratio) < 1e-9
    assert "4 iterations each, pooled over two processes" in result.stdout


def test_byom_steps_extrapolates_through_two_sizes_and_tabulates():
    import importlib.util

    spec = importlib.util.spec_from_file_location("byom_steps", ROOT / "benchmarks" / "byom_steps.py")
    byom = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(byom)
    assert abs(byom.extrapolate([(1, 2.0), (4, 16.0)], 16, power=True) - 128.0) < 1e-9  # 2 p^1.5
    assert byom.extrapolate([(1, 1000.0), (4, 1300.0)], 16, power=False) == 2500.0
    rows = [
        {"source": "128x256", "s_per_iter_median": 1.0, "peak_memory_mb": 1000.0},
        {"source": "256x512", "s_per_iter_median": 4.0, "peak_memory_mb": 1300.0},
    ]
    text = byom.table({"DeepLab-v2 ResNet-101": rows}, (512, 1024))
    header, rule, row = text.splitlines()
    assert "s/step 512x1024 (extrapolated)" in header and rule.count("---") == 8
    assert row.split(" | ")[-2:] == ["16", "2,500 |"]
