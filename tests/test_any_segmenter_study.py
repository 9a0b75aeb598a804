"""benchmarks/any_segmenter_study.py: the whole study at a tiny size, and the table it writes from given results."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks import any_segmenter_study

# Tiny runs: one seed, 2 steps per stage, a small synthetic pair at 32x64.
TINY_RUNS = [
    "--synthetic_num_images",
    "16",
    "12",
    "6",
    "--source_size",
    "32",
    "64",
    "--target_size",
    "32",
    "64",
]


def results_md_means(results_md: str, column: str) -> dict[str, str]:
    """The cells of `column` in results.md's table, by row title."""
    rows = [line.split("|")[1:-1] for line in results_md.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0]]
    return {row[0].strip(): row[header.index(column)].strip() for row in rows[2:]}


def test_tiny_study_runs_end_to_end_and_reports_the_metrics_files(tmp_path, monkeypatch):
    docs, results = tmp_path / "page.md", tmp_path / "results" / "study.json"
    begin, end = any_segmenter_study.markers()
    docs.write_text(f"# Study\n\nintro\n{begin}\nold table\n{end}\nafter\n")
    out = tmp_path / "out"
    argv = ["--seeds", "7", "--num_iterations", "2", "--output_dir", str(out), "--docs", str(docs)]
    argv += ["--results", str(results), "--", *TINY_RUNS, "--synthetic_dir", str(tmp_path / "synthetic")]
    study = any_segmenter_study.main(argv)

    assert [(r["model"], r["seed"]) for r in study] == [("deeplabv2", 7), ("segformer", 7)]
    for result in study:
        plugin = out / f"{result['model']}-7" / "plugin"
        commands = result["commands"]
        assert "--stage inter" in commands["inter"] and "--inter_model" not in commands["inter"]
        for stage in ("rank", "intra", "eval"):
            assert f"--inter_model {out / (result['model'] + '-7')}/stage1/inter/model" in commands[stage]
            assert "--intra_init inter" in commands[stage] and f"--stage {stage}" in commands[stage]
        assert ("segformer_small.json" in commands["inter"]) == (result["model"] == "segformer")
        # The numbers are the plug-in run's: metrics.json, results.md's own-classes column, ranking.json.
        metrics = json.loads((plugin / "eval" / "metrics.json").read_text())
        assert result["labelled_classes"] == "synthetic, 9 classes" and result["protocol"] == "19"
        own = results_md_means((plugin / "eval" / "results.md").read_text(), "mIoU (synthetic, 9 classes)")
        protocol = results_md_means((plugin / "eval" / "results.md").read_text(), "mIoU (19)")
        for name in ("G_inter", "G_intra"):
            title = metrics["results"][name]["title"]
            value = result["mean_iou"][name]
            assert value["protocol"] == metrics["results"][name]["scores"]["19"]["mean_iou"]
            assert f"{100 * value['labelled_classes']:.1f}" == own[title]
            assert f"{100 * value['protocol']:.1f}" == protocol[title]
        ranking = json.loads((plugin / "ranking" / "ranking.json").read_text())
        assert result["mean_condition"] == ranking["mean_condition"]
        assert set(result["seconds"]) == {"inter", "rank", "intra", "eval"}

    # The table: a header, its rule, one row per model and seed, the numbers of study.json.
    text = docs.read_text()
    assert text.startswith(f"# Study\n\nintro\n{begin}\n") and text.endswith(f"{end}\nafter\n")
    assert "old table" not in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[0].startswith("| stage-1 model | seed | G_inter mIoU (synthetic, 9 classes) |")
    assert rows[1] == "|---|---|" + "---:|" * 11 and len(rows) == 4
    for row, result in zip(rows[2:], study):
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        inter, intra = result["mean_iou"]["G_inter"], result["mean_iou"]["G_intra"]
        assert cells[1] == "7"
        assert cells[2:4] == [
            f"{100 * inter['labelled_classes']:.1f}",
            f"{100 * intra['labelled_classes']:.1f}",
        ]
        assert cells[7:9] == [f"{result['mean_condition'][s]:.2f}" for s in ("easy", "hard")]
    assert "1 seed(s) (7), 2 steps per stage" in text
    assert json.loads(results.read_text()) == study == json.loads((out / "study.json").read_text())

    # Called again, it reads the recorded stages; with other options it refuses to mix runs.
    monkeypatch.setattr(any_segmenter_study.run_intrada, "main", lambda argv: pytest.fail("ran again"))
    assert any_segmenter_study.main(argv) == study
    other = [*argv[:3], "3", *argv[4:]]
    with pytest.raises(ValueError, match=r"inter_run.json records stage inter run with another command"):
        any_segmenter_study.main(other)


def fake_result(model: str, seed: int, inter: float, intra: float, condition: tuple[float, float]) -> dict:
    return {
        "model": model,
        "seed": seed,
        "mean_iou": {
            "G_inter": {"labelled_classes": inter, "protocol": inter / 2},
            "G_intra": {"labelled_classes": intra, "protocol": intra / 2},
        },
        "labelled_classes": "synthetic, 9 classes",
        "protocol": "19",
        "mean_condition": {"easy": condition[0], "hard": condition[1]},
        "seconds": {"inter": 100.0, "rank": 20.0, "intra": 92.0 if seed == 1 else 90.0, "eval": 10.0},
        "commands": {},
    }


def test_table_gives_mean_and_std_over_seeds_then_each_seed():
    results = [
        fake_result("deeplabv2", 1234, 0.40, 0.44, (0.30, 0.80)),
        fake_result("segformer", 1234, 0.30, 0.28, (0.40, 0.70)),
        fake_result("deeplabv2", 1, 0.42, 0.48, (0.32, 0.78)),
        fake_result("segformer", 1, 0.34, 0.34, (0.42, 0.66)),
    ]
    markdown = any_segmenter_study.table(results)
    lines = markdown.splitlines()
    assert lines[0] == (
        "| stage-1 model | seed | G_inter mIoU (synthetic, 9 classes) | G_intra mIoU (synthetic, 9 classes) | "
        "G_intra − G_inter | G_inter mIoU (19) | G_intra mIoU (19) | mean condition easy | mean condition hard | "
        "stage 1 s | ranking s | stage 3 s | eval s |"
    )
    deeplab, segformer = "DeepLab-v2 (MobileNetV3-small)", "SegFormer (MiT-b0 size)"
    # mean ± sample std: (40, 42) -> 41.0 ± 1.4; the gain per seed (4, 6) -> 5.0 ± 1.4
    assert lines[2] == (
        f"| {deeplab} | mean ± std (2 seeds) | 41.0 ± 1.4 | 46.0 ± 2.8 | 5.0 ± 1.4 | 20.5 ± 0.7 | 23.0 ± 1.4 | "
        "0.31 ± 0.01 | 0.79 ± 0.01 | 100 ± 0 | 20 ± 0 | 91 ± 1 | 10 ± 0 |"
    )
    assert (
        lines[3]
        == f"| {deeplab} | 1234 | 40.0 | 44.0 | 4.0 | 20.0 | 22.0 | 0.30 | 0.80 | 100 | 20 | 90 | 10 |"
    )
    assert lines[4].startswith(f"| {deeplab} | 1 | 42.0 | 48.0 | 6.0 |")
    # a seed where stage 3 lost is shown as it is
    assert lines[5].startswith(
        f"| {segformer} | mean ± std (2 seeds) | 32.0 ± 2.8 | 31.0 ± 4.2 | -1.0 ± 1.4 |"
    )
    assert lines[6].startswith(f"| {segformer} | 1234 | 30.0 | 28.0 | -2.0 |")
    assert len(lines) == 8
    one_seed = any_segmenter_study.table(results[:1]).splitlines()
    assert len(one_seed) == 3 and one_seed[2].startswith(f"| {deeplab} | 1234 | 40.0 |")


def test_a_docs_page_without_the_markers_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=re.escape("lacks the markers <!-- any-segmenter-study:begin -->")):
        any_segmenter_study.check_markers(tmp_path / "config.json")
