"""Run from an empty folder, in a virtual environment holding only the built wheel and its dependencies:
the installed package alone builds a model, trains a 2-step stage on the synthetic pair, writes a card
and loads its `evaluate` module."""

from __future__ import annotations

import sys
from pathlib import Path

import evaluate
import numpy as np

import modeling_intrada
from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
from modeling_intrada.evaluation.metrics import evaluate_module_path
from modeling_intrada.publishing.cards import RunSummary, segmenter_card
from modeling_intrada.training.pipeline import main

here = Path.cwd()
package = Path(modeling_intrada.__file__).resolve().parent
if here in package.parents or "site-packages" not in str(package):
    sys.exit(f"modeling_intrada was imported from {package}, not from the installed wheel")

model = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(num_labels=19))
assert sum(p.numel() for p in model.parameters()) == 44_601_560

main(
    [
        "--stage", "inter",
        "--output_dir", "run",
        "--synthetic_dir", "synthetic",
        "--synthetic_num_images", "4", "4", "4",
        "--backbone", "timm:mobilenetv3_small_050",
        "--source_size", "32", "64",
        "--target_size", "32", "64",
        "--num_iterations", "2",
        "--batch_size", "1",
        "--num_workers", "0",
    ]
)  # fmt: skip
assert (here / "run" / "inter" / "model" / "config.json").is_file()

card = segmenter_card(RunSummary.read("run"), "inter", repo_id="someone/intrada-smoke")
card.save("run/inter/model/README.md")
assert "IntraDA" in (here / "run" / "inter" / "model" / "README.md").read_text()

metric = evaluate.load(evaluate_module_path())
labels = np.zeros((4, 4), dtype=np.int64)
scores = metric.compute(predictions=[labels], references=[labels], num_labels=19, ignore_index=255)
assert abs(scores["mean_iou"] - 1.0) < 1e-9, scores
print(f"wheel check: passed ({package})")
