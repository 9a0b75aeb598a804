"""Stage 2: scores, the split, the normalisation, the artifact (SPEC section 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import load_dataset

from modeling_intrada.errors import NonFiniteLossError, UsageError
from modeling_intrada.method.losses import weighted_self_information
from modeling_intrada.method.ranking import (
    check_lambda,
    load_ranking,
    normalization_factor,
    rank_by_entropy,
    save_ranking,
    score_logits,
    split_by_score,
)


@pytest.mark.parametrize(
    "lambda_easy, expected_easy",
    [(0.5, [4, 2, 0, 5, 1]), (0.67, [4, 2, 0, 5, 1, 3]), (1.0, [4, 2, 0, 5, 1, 3, 6, 7, 8, 9])],
)
def test_known_scores_give_known_split(lambda_easy, expected_easy):
    scores = [0.30, 0.50, 0.20, 0.55, 0.10, 0.40, 0.70, 0.80, 0.90, 0.95]
    order, num_easy = split_by_score(scores, list(range(10)), lambda_easy)
    assert order == [4, 2, 0, 5, 1, 3, 6, 7, 8, 9]
    assert order[:num_easy] == expected_easy


def test_cityscapes_split_sizes():
    assert int(2975 * 0.67) == 1993  # the paper's 1,993 easy / 982 hard
    _, num_easy = split_by_score([0.0] * 2975, list(range(2975)), 0.67)
    assert (num_easy, 2975 - num_easy) == (1993, 982)


def test_ties_are_broken_by_index():
    order, _ = split_by_score([0.2, 0.1, 0.2, 0.1], [3, 2, 1, 0], 0.5)
    assert order == [3, 1, 2, 0]


def test_a_lambda_that_leaves_no_easy_image_is_refused():
    with pytest.raises(UsageError, match=r"lambda_easy=0.1 leaves no easy image among 5"):
        split_by_score([0.1, 0.2, 0.3, 0.4, 0.5], list(range(5)), 0.1)


def test_non_finite_scores_are_refused():
    with pytest.raises(NonFiniteLossError, match=r"1 of 3 images score NaN or infinity \(e.g. image 7\)"):
        split_by_score([0.1, float("nan"), 0.3], [6, 7, 8], 0.5)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, 2, float("nan"), "0.5"])
def test_lambda_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_lambda(bad)


def test_score_is_mean_weighted_self_information_and_normalisation_uses_the_rare_list():
    logits = torch.randn(2, 5, 6, 7)
    logits[1, 3] += 20  # image 1 predicts class 3 everywhere: confident, and class 3 is "rare"
    raw, num_rare, entropy, prediction = score_logits(logits, rare_train_ids=[3, 4])
    torch.testing.assert_close(raw, weighted_self_information(logits).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(entropy, weighted_self_information(logits).sum(dim=1))
    assert torch.equal(prediction, logits.argmax(1))
    present = [len({3, 4} & set(prediction[i].unique().tolist())) for i in range(2)]
    assert num_rare.tolist() == present and present[1] == 1
    assert normalization_factor(0, 11) == 1.5 and normalization_factor(11, 11) == 0.5
    assert normalization_factor(1, 2) == pytest.approx(1.0)


def test_an_image_scores_the_same_alone_in_any_batch_and_on_any_number_of_threads():
    # 19 x 64 x 64 values an image: large enough for the CPU to split a whole-image sum across threads.
    logits = torch.randn(5, 19, 64, 64, generator=torch.Generator().manual_seed(3)) * 3
    threads = torch.get_num_threads()
    scores = []
    try:
        for num_threads in (1, 2):
            torch.set_num_threads(num_threads)
            scores.append(torch.cat([score_logits(logits[i : i + 1])[0] for i in range(5)]))
            scores.append(score_logits(logits)[0])
            scores.append(torch.cat([score_logits(logits[:3])[0], score_logits(logits[3:])[0]]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(scores[0], other) for other in scores[1:])
    assert scores[0].dtype == torch.float32
    torch.testing.assert_close(scores[0], weighted_self_information(logits).mean(dim=(1, 2, 3)))


class ConstantModel(torch.nn.Module):
    """Returns pre-set logits per image (looked up by the first pixel value), to rank known scores."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values: torch.Tensor):
        from modeling_intrada.models.deeplabv2.modeling_deeplabv2 import DeepLabV2SegmenterOutput

        index = pixel_values[:, 0, 0, 0].long()
        return DeepLabV2SegmenterOutput(logits=self.logits[index])


def batches_of(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        indices = list(range(start, min(n, start + batch_size)))
        pixel_values = torch.zeros(len(indices), 3, 8, 8)
        pixel_values[:, 0, 0, 0] = torch.tensor(indices, dtype=torch.float32)
        yield {"pixel_values": pixel_values, "id": [f"im{i}" for i in indices], "index": indices}


def test_normalisation_moves_images_with_rare_classes_to_the_easy_split():
    # Image i is confident in class 0 by a margin; lower margin = higher entropy: 0 < 1 < 2 < 3.
    logits = torch.zeros(4, 3, 8, 8)
    for i, margin in enumerate((6.0, 5.0, 4.5, 4.2)):
        logits[i, 0] = margin
    logits[3, 0, :2], logits[3, 2, :2] = 0.0, 4.2  # image 3 also predicts the rare class 2, as confidently
    model = ConstantModel(logits)
    plain = rank_by_entropy(model, batches_of(4, 3), lambda_easy=0.5)
    normalised = rank_by_entropy(model, batches_of(4, 3), lambda_easy=0.5, normalize=True, rare_train_ids=[2])
    assert "im3" in plain.hard_ids() and "im3" in normalised.easy_ids()
    factor = normalization_factor(1, 1)
    position = normalised.ids.index("im3")
    assert normalised.scores[position] == pytest.approx(normalised.raw_scores[position] * factor)
    with pytest.raises(ValueError, match="rare"):
        rank_by_entropy(model, batches_of(4, 3), lambda_easy=0.5, normalize=True)


def test_artifact_round_trip(tmp_path):
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 8, 8)
    model = ConstantModel(logits)
    result = rank_by_entropy(model, batches_of(5, 2), lambda_easy=0.6, keep_entropy_maps=True)
    assert (result.num_easy, result.num_hard) == (3, 2)
    assert result.scores == sorted(result.scores)
    save_ranking(result, tmp_path / "ranking", target_dataset="toy", model_name="const")
    for name in ("ranking.json", "ranking.png"):
        assert (tmp_path / "ranking" / name).is_file()
    assert not (tmp_path / "ranking" / "README.md").exists()  # the card comes from publishing.cards
    table = load_dataset(str(tmp_path / "ranking"), split="train", cache_dir=str(tmp_path / "cache"))
    assert table.column_names[:4] == ["id", "index", "rank", "split"]
    easy_row = table.filter(lambda row: row["split"] == "easy")[0]
    pseudo = np.asarray(easy_row["pseudo_label"])
    assert np.array_equal(pseudo, logits[easy_row["index"]].argmax(0).numpy())
    assert all(row["pseudo_label"] is None for row in table if row["split"] == "hard")
    assert np.asarray(table[0]["entropy_map"]).shape == (8, 8)

    splits = load_ranking(tmp_path / "ranking")
    assert splits.easy_ids == result.easy_ids() and splits.hard_ids == result.hard_ids()
    assert np.array_equal(splits.pseudo_label(easy_row["id"]), pseudo)
    assert math.isclose(splits.lambda_easy, 0.6)
    with pytest.raises(KeyError, match="not an easy image"):
        splits.pseudo_label(result.hard_ids()[0])
    with pytest.raises(FileNotFoundError, match="ranking-splits"):
        load_ranking(tmp_path)


def test_classifier_outputs_rank_too():
    logits = torch.tensor([[5.0, 0, 0], [1.0, 1, 1], [0, 3.0, 0], [0, 0, 0.5]])

    class Classifier(torch.nn.Module):
        def forward(self, pixel_values):
            return logits[pixel_values[:, 0, 0, 0].long()]

    result = rank_by_entropy(
        Classifier(), batches_of(4, 4), lambda_easy=0.5, predict=lambda m, x: m(x), device="cpu"
    )
    assert result.ids == ["im0", "im2", "im3", "im1"]
    assert result.pseudo_labels[:2] == [0, 1] and result.pseudo_labels[2:] == [None, None]
