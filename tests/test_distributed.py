"""Two CPU processes (gloo), as `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import torch
from accelerate import Accelerator
from distributed_utils import accelerator_kwargs, run_on_processes
from test_stage_loop import Rows, TinySegmenter, discriminators

from modeling_intrada.evaluation.segmentation import sharded_batches
from modeling_intrada.method.adaptation import SegmentationTask, poly_learning_rate
from modeling_intrada.method.ranking import rank_by_entropy, save_ranking
from modeling_intrada.training.stage_loop import AdaptationStage, StageSettings


def _train_worker(rank: int, out_dir: str) -> None:
    torch.manual_seed(0)
    accelerator = Accelerator(**accelerator_kwargs())
    settings = StageSettings(num_iterations=3, max_iters=5, learning_rate=0.05, log_steps=1)
    stage = AdaptationStage(
        accelerator, SegmentationTask(), TinySegmenter(), discriminators(),
        source=(Rows(6, 1, True), 1), target=(Rows(5, 2, False), 1), settings=settings, output_dir=out_dir,
    )  # fmt: skip
    seen = []
    original = stage.set_learning_rates
    stage.set_learning_rates = lambda step: seen.append(original(step)) or seen[-1]
    stage.run()
    weights = [p.detach().sum().item() for p in stage.generator.parameters()]
    result = {"lrs": seen, "weights": weights, "processes": accelerator.num_processes}
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    accelerator.end_training()


def test_poly_learning_rate_and_synchronised_weights_on_two_processes(tmp_path):
    run_on_processes(_train_worker, 2, str(tmp_path))
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2)]
    expected = [
        {"lr": poly_learning_rate(0.05, step, 5), "lr_d": poly_learning_rate(1e-4, step, 5)}
        for step in range(3)
    ]
    for result in results:
        assert result["processes"] == 2
        assert result["lrs"] == expected  # once per optimizer step, not once per process
    assert results[0]["weights"] == results[1]["weights"]  # gradients were averaged across processes


class Images(torch.utils.data.Dataset):
    def __init__(self, count: int = 7, size: int = 32) -> None:
        self.images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(5))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.images[index], "id": f"img{index}", "index": index}


def _rank(
    out_dir: str,
    rank: int,
    world_size: int,
    accelerator=None,
    images: Images | None = None,
    batch_size: int = 2,
) -> None:
    torch.manual_seed(0)
    model = TinySegmenter()
    batches = sharded_batches(images or Images(), batch_size, rank, world_size)
    result = rank_by_entropy(
        model, batches, lambda_easy=0.67, normalize=True, rare_train_ids=[2], keep_entropy_maps=True,
        accelerator=accelerator,
    )  # fmt: skip
    if rank == 0:
        save_ranking(result, out_dir, target_dataset="images", model_name="tiny")


def _rank_worker(rank: int, out_dir: str) -> None:
    accelerator = Accelerator(**accelerator_kwargs())
    assert accelerator.num_processes == 2
    _rank(out_dir, rank, 2, accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def test_ranking_is_identical_on_one_and_two_processes(tmp_path):
    _rank(str(tmp_path / "one"), 0, 1)
    run_on_processes(_rank_worker, 2, str(tmp_path / "two"))
    data = "data/train-00000-of-00001.parquet"
    one, two = pq.read_table(tmp_path / "one" / data), pq.read_table(tmp_path / "two" / data)
    assert one.num_rows == 7 and one.equals(two)
    assert (tmp_path / "one" / "ranking.json").read_text() == (tmp_path / "two" / "ranking.json").read_text()
    # The card (README.md) is written from these files by `publishing.cards.write_run_cards`.
    assert (tmp_path / "one" / "ranking.png").read_bytes() == (tmp_path / "two" / "ranking.png").read_bytes()


# 16 images of 3 x 128 x 128 scores: large enough for the CPU to split a whole-image sum across threads.
BATCH_SIZES = (1, 3, 16)


def _rank_at_batch_sizes(out_dir: str, rank: int, world_size: int, accelerator=None) -> None:
    for batch_size in BATCH_SIZES:
        _rank(f"{out_dir}/{batch_size}", rank, world_size, accelerator, Images(16, 128), batch_size)


def _rank_at_batch_sizes_worker(rank: int, out_dir: str) -> None:
    accelerator = Accelerator(**accelerator_kwargs())
    _rank_at_batch_sizes(out_dir, rank, 2, accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def test_ranking_is_identical_on_one_and_two_processes_at_any_batch_size(tmp_path):
    run_on_processes(_rank_at_batch_sizes_worker, 2, str(tmp_path / "two"))  # one thread per process
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # one process with two threads: a score summed across threads would differ
    try:
        _rank_at_batch_sizes(str(tmp_path / "one"), 0, 1)
    finally:
        torch.set_num_threads(threads)
    data = "data/train-00000-of-00001.parquet"
    for batch_size in BATCH_SIZES:
        one, two = tmp_path / "one" / str(batch_size), tmp_path / "two" / str(batch_size)
        table = pq.read_table(one / data)
        assert table.num_rows == 16 and table.equals(pq.read_table(two / data)), batch_size
        assert (one / "ranking.json").read_text() == (two / "ranking.json").read_text(), batch_size
