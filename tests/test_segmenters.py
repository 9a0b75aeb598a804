"""G of any per-pixel family (`modeling_intrada.method.segmenters`): levels, parameter groups, normalisation
layers, class order, image processors, and a ranking identical on one and two processes."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from accelerate import Accelerator
from distributed_utils import accelerator_kwargs, run_on_processes
from PIL import Image
from segmenter_configs import FAMILIES, WITH_AUXILIARY_HEAD, tiny_config
from test_distributed import Images
from transformers import AutoModelForSemanticSegmentation

from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
from modeling_intrada.errors import UsageError
from modeling_intrada.evaluation.segmentation import sharded_batches
from modeling_intrada.method.adaptation import SegmentationTask
from modeling_intrada.method.ranking import rank_by_entropy, save_ranking
from modeling_intrada.method.segmenters import (
    align_classes,
    check_segmenter,
    encoder_name,
    generator_parameter_groups,
    has_auxiliary_level,
    image_processor_class,
    normalization_of,
    prepare_generator,
    processor_for_run,
    uses_align_corners,
)
from modeling_intrada.models.deeplabv2.image_transforms import normalize, resize_image

# The families' image processors, every one a transformers family with a semantic-segmentation model.
PROCESSOR_FAMILIES = ("segformer", "upernet", "dpt", "beit", "data2vec-vision", "mobilevit", "mobilevitv2")


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return AutoModelForSemanticSegmentation.from_config(tiny_config(family)).eval()


def pixels(size: tuple[int, int] = (32, 64), batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("model_type", ["maskformer", "mask2former", "oneformer"])
def test_mask_models_are_refused(model_type):
    with pytest.raises(UsageError, match="set of masks with class scores"):
        check_segmenter({"model_type": model_type}, "--generator m")


def test_models_of_other_tasks_are_refused():
    with pytest.raises(UsageError, match="not a semantic-segmentation model"):
        check_segmenter({"model_type": "bert"}, "--generator m")
    assert check_segmenter({"model_type": "segformer"}, "x") == "segformer"
    assert check_segmenter({"model_type": "deeplabv2"}, "x") == "deeplabv2"


@pytest.mark.parametrize("family", PROCESSOR_FAMILIES)
def test_the_saved_processor_computes_the_pixel_values_the_run_trained_on(family):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    processor = image_processor_class(family)()
    name = normalization_of(processor, family)
    ready = processor_for_run(processor, (32, 48))
    theirs = ready(image, return_tensors="np")["pixel_values"][0]
    ours = normalize(resize_image(image, (32, 48)), name)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_a_processor_of_no_known_normalisation_is_refused():
    processor = image_processor_class("segformer")(image_mean=[0.1, 0.2, 0.3])
    with pytest.raises(UsageError, match="none of this project's normalisations"):
        normalization_of(processor, "--generator m")


@pytest.mark.parametrize("family", ["segformer", "upernet", "upernet-swin", "mobilevit"])
def test_encoder_at_the_base_rate_and_every_other_parameter_at_the_head_rate(family):
    model = tiny_model(family)
    prepare_generator(model)
    encoder, heads = generator_parameter_groups(model, 0.01, head_lr_multiplier=10.0)
    prefix = encoder_name(model)
    assert (encoder["lr"], heads["lr"], heads["lr_multiplier"]) == (0.01, 0.1, 10.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert encoder["params"] and all(names[id(p)].startswith(prefix + ".") for p in encoder["params"])
    assert heads["params"] and not any(names[id(p)].startswith(prefix + ".") for p in heads["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in encoder["params"] + heads["params"]} == trainable


def test_deeplabv2_keeps_its_own_groups():
    model = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone="timm:mobilenetv3_small_100", num_labels=3)
    )
    groups = generator_parameter_groups(model, 0.01)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert uses_align_corners(model) and not uses_align_corners(tiny_model("segformer"))


@pytest.mark.parametrize("bn_mode", ["reference", "frozen"])
def test_encoder_batch_norm_affine_is_frozen_and_frozen_mode_keeps_its_statistics(bn_mode):
    model = tiny_model("mobilevit")
    prepare_generator(model, bn_mode=bn_mode)
    norms = [m for m in model.mobilevit.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(p.requires_grad for m in norms for p in m.parameters())
    before = [m.running_mean.clone() for m in norms]
    model.train()
    model(pixel_values=pixels())
    changed = any(not torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    assert changed == (bn_mode == "reference")
    head_norms = [m for m in model.segmentation_head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert head_norms and all(p.requires_grad for m in head_norms for p in m.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_levels_aux_and_main_where_the_family_has_an_auxiliary_head(family):
    model = tiny_model(family)
    prepare_generator(model)
    size = (64, 64) if family == "dpt" else (64, 128)
    assert has_auxiliary_level(model) == (family in WITH_AUXILIARY_HEAD)
    task = SegmentationTask(multi_level=has_auxiliary_level(model), align_corners=uses_align_corners(model))
    levels = task.forward(model, pixels(size))
    assert len(levels) == (2 if family in WITH_AUXILIARY_HEAD else 1)
    for level in levels:
        assert level.logits.shape == (2, 19, *size)


def test_without_multi_level_the_auxiliary_head_is_not_trained():
    model = tiny_model("upernet")
    prepare_generator(model, multi_level=False)
    assert not any(p.requires_grad for p in model.auxiliary_head.parameters())
    assert all(p.requires_grad for p in model.decode_head.parameters())


@pytest.mark.parametrize("family", ["segformer", "upernet", "mobilevit", "beit"])
def test_classes_in_another_order_are_mapped_by_name(family):
    model = tiny_model(family)
    prepare_generator(model)
    names = [model.config.id2label[i] for i in range(19)]
    order = list(np.random.default_rng(1).permutation(19))
    run_names = [names[i] for i in order]
    x = pixels((64, 64))
    before = model(pixel_values=x)
    align_classes(model, [n.upper().replace(" ", "_") for n in run_names], "--generator m")
    after = model(pixel_values=x)
    torch.testing.assert_close(after.logits, before.logits[:, order])
    if family in ("upernet", "beit"):
        torch.testing.assert_close(after["aux_logits"], before["aux_logits"][:, order])
    assert [model.config.id2label[i] for i in range(19)] == [n.upper().replace(" ", "_") for n in run_names]


def test_classes_of_other_names_are_refused_with_the_names():
    model = tiny_model("segformer")
    run_names = [model.config.id2label[i] for i in range(18)] + ["lamp post"]
    with pytest.raises(UsageError, match=r"lacks \['lamp post'\], the run lacks \['bicycle'\]"):
        align_classes(model, run_names, "--generator m")


RANKED_FAMILIES = ("segformer", "upernet", "mobilevit")


def _rank(out_dir: str, rank: int, world_size: int, accelerator=None) -> None:
    for family in RANKED_FAMILIES:
        model = tiny_model(family, seed=4)
        batches = sharded_batches(Images(7, 64), 3, rank, world_size)
        result = rank_by_entropy(
            model,
            batches,
            lambda_easy=0.5,
            normalize=True,
            rare_train_ids=[5, 7, 11],
            accelerator=accelerator,
        )
        if rank == 0:
            save_ranking(result, f"{out_dir}/{family}", target_dataset="images", model_name=family)


def _rank_worker(rank: int, out_dir: str) -> None:
    accelerator = Accelerator(**accelerator_kwargs())
    _rank(out_dir, rank, 2, accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def test_ranking_is_identical_on_one_and_two_processes_for_every_family(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _rank(str(tmp_path / "one"), 0, 1)
    finally:
        torch.set_num_threads(threads)
    run_on_processes(_rank_worker, 2, str(tmp_path / "two"))
    data = "data/train-00000-of-00001.parquet"
    for family in RANKED_FAMILIES:
        one, two = tmp_path / "one" / family, tmp_path / "two" / family
        table = pq.read_table(one / data)
        assert table.num_rows == 7 and table.equals(pq.read_table(two / data)), family
        assert (one / "ranking.json").read_text() == (two / "ranking.json").read_text(), family


def upernet_stage(out_dir, settings, accelerator=None):
    """A stage-1 loop on a tiny UperNet (two levels through its auxiliary head), on 32x32 rows."""
    from test_stage_loop import NUM_CLASSES, Rows, discriminators

    from modeling_intrada.training.stage_loop import AdaptationStage

    torch.manual_seed(0)
    config = tiny_config("upernet")
    config.id2label = {i: f"class {i}" for i in range(NUM_CLASSES)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    model = AutoModelForSemanticSegmentation.from_config(config)
    prepare_generator(model)
    task = SegmentationTask(multi_level=True, align_corners=uses_align_corners(model))
    return AdaptationStage(
        accelerator or Accelerator(cpu=True), task, model, discriminators(),
        source=(Rows(6, 1, True), 2), target=(Rows(5, 2, False), 2), settings=settings, output_dir=out_dir,
    )  # fmt: skip


def test_resume_is_bit_identical_with_a_transformers_segmenter(tmp_path):
    from test_stage_loop import final_weights

    from modeling_intrada.training.stage_loop import StageSettings

    settings = dict(num_iterations=4, max_iters=10, seed=3, learning_rate=0.01)
    straight = upernet_stage(tmp_path / "straight", StageSettings(**settings))
    straight.run()
    first = upernet_stage(
        tmp_path / "resumed", StageSettings(**{**settings, "num_iterations": 2}, checkpointing_steps=2)
    )
    first.run()
    second = upernet_stage(tmp_path / "resumed", StageSettings(**settings))
    second.run(resume_from_checkpoint="latest")
    a, b = final_weights(straight), final_weights(second)
    assert second.completed_steps == 4 and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = upernet_stage(tmp_path / "start", StageSettings(**settings)).generator.state_dict()
    assert not torch.equal(start["auxiliary_head.classifier.weight"], a["g.auxiliary_head.classifier.weight"])


def _train_worker(rank: int, out_dir: str) -> None:
    import json
    from pathlib import Path

    from modeling_intrada.training.stage_loop import StageSettings

    accelerator = Accelerator(**accelerator_kwargs())
    stage = upernet_stage(
        out_dir, StageSettings(num_iterations=2, max_iters=5, learning_rate=0.01), accelerator
    )
    stage.run()
    weights = [p.detach().sum().item() for p in stage.generator.parameters()]
    Path(out_dir, f"{rank}.json").write_text(json.dumps(weights))
    accelerator.end_training()


def test_two_processes_train_the_auxiliary_level_in_step(tmp_path):
    import json

    run_on_processes(_train_worker, 2, str(tmp_path))
    first, second = (json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2))
    assert first == second  # DDP averaged the gradients of both levels, hooks and all
