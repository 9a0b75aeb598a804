"""benchmarks/camvid_study.py: the table it writes from the per-seed results, and the stage timings."""

from __future__ import annotations

import os
from types import SimpleNamespace

from benchmarks import camvid_study


def seed_result(seed: int, dusk: dict[str, float], seconds: dict[str, float]) -> dict:
    scores = {
        name: {"dusk_val": {"mean_iou": v}, "day_test": {"mean_iou": v + 0.1}} for name, v in dusk.items()
    }
    quality = {split: {"images": n, "pixel_accuracy": a, "mean_iou": a - 0.2}
               for split, n, a in (("easy", 41, 0.9), ("hard", 21, 0.7))}  # fmt: skip
    return {"seed": seed, "scores": scores, "ranking": {"IntraDA (lambda 0.67)": quality}, "seconds": seconds}


def test_table_has_mean_and_std_over_seeds_single_seed_rows_and_times():
    per_seed = [
        seed_result(0, {"source only": 0.40, "IntraDA (lambda 0.67)": 0.50, "lambda 0.5": 0.45},
                    {"source_only/inter": 600.0, "IntraDA_lambda_0.67/intra": 1200.0, "lambda_0.5/intra": 900.0}),
        seed_result(1, {"source only": 0.42, "IntraDA (lambda 0.67)": 0.54}, {"source_only/inter": 660.0}),
    ]  # fmt: skip
    markdown = camvid_study.table(per_seed, iterations=200)
    assert "| source only | 41.0 ± 1.4 | 51.0 ± 1.4 |" in markdown
    assert "| IntraDA (lambda 0.67) | 52.0 ± 2.8 | 62.0 ± 2.8 |" in markdown
    assert "| lambda 0.5 | 45.0 (1 seed) | 55.0 (1 seed) |" in markdown
    assert "| IntraDA (lambda 0.67) | easy | 41 | 90.0 ± 0.0 | 70.0 ± 0.0 |" in markdown
    assert "- seed 0: main 30 min, ablations 15 min" in markdown
    assert "- seed 1: main 11 min" in markdown


def test_seed_seconds_reads_records_and_falls_back_to_file_times(tmp_path):
    recorded = tmp_path / "advent"
    (recorded / "inter").mkdir(parents=True)
    (recorded / "inter" / "DONE").write_text("")
    (recorded / "inter_seconds.txt").write_text("123.4\n")
    older = tmp_path / "source_only"  # finished before records existed: config.yaml at start, DONE at end
    (older / "inter").mkdir(parents=True)
    (older / "config.yaml").write_text("")
    (older / "inter" / "DONE").write_text("")
    os.utime(older / "config.yaml", (1000.0, 1000.0))
    os.utime(older / "inter" / "DONE", (1600.0, 1600.0))
    (tmp_path / "unfinished" / "intra").mkdir(parents=True)
    assert camvid_study.seed_seconds(tmp_path) == {"advent/inter": 123.4, "source_only/inter": 600.0}


def test_each_batchnorm_mode_writes_its_own_docs_section(tmp_path, monkeypatch):
    docs = tmp_path / "camvid.md"
    docs.write_text(
        "intro\n<!-- camvid-study:begin -->\nold main\n<!-- camvid-study:end -->\nmiddle\n"
        "<!-- camvid-study-bn-reference:begin -->\nold reference\n<!-- camvid-study-bn-reference:end -->\nend\n"
    )
    monkeypatch.setattr(camvid_study, "DOCS", docs)
    per_seed = [seed_result(0, {"source only": 0.40}, {"source_only/inter": 600.0})]
    args = SimpleNamespace(iterations=200, bn_mode="reference", output_dir=tmp_path, no_docs=False)
    camvid_study.write_outputs(per_seed, args)
    text = docs.read_text()
    assert "old main" in text and "old reference" not in text
    assert "240x180, BatchNorm `reference`" in text.split("camvid-study-bn-reference:begin")[1]
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end -->\nend\n")
    assert (tmp_path / "table.md").read_text().startswith("1 seed(s), 200 iterations")
