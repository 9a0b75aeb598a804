"""The stage loop against a hand-written SPEC section 3, the poly schedule, and kill-and-resume."""

from __future__ import annotations

import copy
import importlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from modeling_intrada import FCDiscriminator, FCDiscriminatorConfig
from modeling_intrada.errors import NonFiniteLossError
from modeling_intrada.method.adaptation import SegmentationTask, poly_learning_rate
from modeling_intrada.models.deeplabv2.modeling_deeplabv2 import DeepLabV2SegmenterOutput
from modeling_intrada.training.stage_loop import AdaptationStage, StageSettings

NUM_CLASSES = 3


class TinySegmenter(nn.Module):
    """A two-level segmenter small enough to check every gradient (stride-2 logits, aux + main heads)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.aux = nn.Conv2d(8, NUM_CLASSES, 1)
        self.main = nn.Conv2d(8, NUM_CLASSES, 3, padding=1)

    def forward(self, pixel_values: torch.Tensor) -> DeepLabV2SegmenterOutput:
        features = torch.relu(self.body(pixel_values))
        return DeepLabV2SegmenterOutput(logits=self.main(features), aux_logits=self.aux(features))


class Rows(torch.utils.data.Dataset):
    def __init__(self, count: int, seed: int, labelled: bool) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(count, 3, 32, 32, generator=generator)
        self.labels = (
            torch.randint(0, NUM_CLASSES, (count, 32, 32), generator=generator) if labelled else None
        )
        if labelled:
            self.labels[:, :4] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        item = {"pixel_values": self.images[index], "id": f"row{index}", "index": index}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


def discriminators(seed: int = 0) -> list[FCDiscriminator]:
    torch.manual_seed(seed)
    return [FCDiscriminator(FCDiscriminatorConfig(num_channels=NUM_CLASSES, ndf=4)) for _ in range(2)]


def make_stage(tmp_path, settings: StageSettings, generator=None, ds=None, source=None, target=None):
    torch.manual_seed(0)
    generator = generator if generator is not None else TinySegmenter()
    return AdaptationStage(
        Accelerator(cpu=True, gradient_accumulation_steps=settings.gradient_accumulation_steps),
        SegmentationTask(framework=settings.framework),
        generator,
        ds if ds is not None else discriminators(),
        source=(source or Rows(6, 1, True), 2),
        target=(target or Rows(5, 2, False), 2),
        settings=settings,
        output_dir=tmp_path,
    )


def by_hand(generator, d_aux, d_main, source, target):
    """SPEC 3 written out: returns the losses and every gradient."""
    c = NUM_CLASSES

    def up(logits, size):
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def wsi(logits):
        p = F.softmax(logits, dim=1)
        return -p * torch.log2(p + 1e-30) / math.log2(c)

    def bce(logits, label):
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))

    for p in list(d_aux.parameters()) + list(d_main.parameters()):
        p.requires_grad_(False)
    out = generator(source["pixel_values"])
    size = source["pixel_values"].shape[-2:]
    s_aux, s_main = up(out.aux_logits, size), up(out.logits, size)
    loss_seg = F.cross_entropy(s_main, source["labels"], ignore_index=255) + 0.1 * F.cross_entropy(
        s_aux, source["labels"], ignore_index=255
    )
    loss_seg.backward()
    out = generator(target["pixel_values"])
    t_aux, t_main = up(out.aux_logits, size), up(out.logits, size)
    loss_adv = 0.001 * bce(d_main(wsi(t_main)), 0.0) + 0.0002 * bce(
        d_aux(wsi(t_aux)), 0.0
    )  # target -> "source"
    loss_adv.backward()
    for p in list(d_aux.parameters()) + list(d_main.parameters()):
        p.requires_grad_(True)
    loss_d_source = bce(d_aux(wsi(s_aux.detach())), 0.0) / 2 + bce(d_main(wsi(s_main.detach())), 0.0) / 2
    loss_d_source.backward()
    loss_d_target = bce(d_aux(wsi(t_aux.detach())), 1.0) / 2 + bce(d_main(wsi(t_main.detach())), 1.0) / 2
    loss_d_target.backward()
    return {
        "loss_seg": loss_seg,
        "loss_adv": loss_adv,
        "loss_d_source": loss_d_source,
        "loss_d_target": loss_d_target,
    }


def test_one_iteration_equals_spec_section_3_by_hand(tmp_path):
    stage = make_stage(tmp_path, StageSettings(num_iterations=1, max_iters=10))
    generator_ref = copy.deepcopy(stage.generator)
    d_aux_ref, d_main_ref = (copy.deepcopy(d) for d in stage.discriminators)
    source = {k: v for k, v in Rows(6, 1, True)[0].items()}
    source = {"pixel_values": source["pixel_values"][None], "labels": source["labels"][None]}
    target = {"pixel_values": Rows(5, 2, False)[0]["pixel_values"][None]}

    losses = stage.adversarial_iteration(source, target)
    expected = by_hand(generator_ref, d_aux_ref, d_main_ref, source, target)

    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-6, atol=1e-7)
    models = [(stage.generator, generator_ref), *zip(stage.discriminators, (d_aux_ref, d_main_ref))]
    for ours, reference in models:
        for (name, p), (_, q) in zip(ours.named_parameters(), reference.named_parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-8, msg=f"gradient of {name}")


def test_optimizer_step_sgd_then_adam_with_poly_lr(tmp_path):
    settings = StageSettings(num_iterations=1, max_iters=4, learning_rate=0.1, disc_learning_rate=0.01)
    stage = make_stage(tmp_path, settings)
    stage.set_learning_rates(2)
    lr = 0.1 * (1 - 2 / 4) ** 0.9
    assert stage.generator_optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert stage.generator_optimizer.param_groups[0]["momentum"] == 0.9
    assert stage.generator_optimizer.param_groups[0]["weight_decay"] == 5e-4
    adam = stage.discriminator_optimizers[0]
    assert adam.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9) and adam.param_groups[0]["betas"] == (
        0.9,
        0.99,
    )
    before = {n: p.detach().clone() for n, p in stage.generator.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in stage.generator.named_parameters()}
    for n, p in stage.generator.named_parameters():
        p.grad = grads[n].clone()
    for d in stage.discriminators:
        for p in d.parameters():
            p.grad = torch.ones_like(p)
    stage.optimizer_step()
    for n, p in stage.generator.named_parameters():  # first SGD step: p - lr * (g + wd * p)
        torch.testing.assert_close(p.detach(), before[n] - lr * (grads[n] + 5e-4 * before[n]))
    assert all(p.grad is None for p in stage.generator.parameters())  # zeroed after the step


def test_poly_schedule_values():
    assert poly_learning_rate(2.5e-4, 0, 250_000) == 2.5e-4
    assert poly_learning_rate(2.5e-4, 120_000, 250_000) == pytest.approx(2.5e-4 * (130_000 / 250_000) ** 0.9)
    assert poly_learning_rate(1e-4, 250_000, 250_000) == 0.0
    with pytest.raises(ValueError, match="max_iters"):
        poly_learning_rate(1.0, 0, 0)


def test_heads_get_ten_times_the_learning_rate(tmp_path):
    from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation

    generator = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone="timm:mobilenetv3_small_050", num_labels=NUM_CLASSES)
    )
    stage = make_stage(tmp_path, StageSettings(num_iterations=1, max_iters=100), generator=generator)
    stage.set_learning_rates(50)
    backbone, heads = stage.generator_optimizer.param_groups
    assert heads["lr"] == pytest.approx(10 * backbone["lr"]) and backbone["lr"] == pytest.approx(
        2.5e-4 * 0.5**0.9
    )


@pytest.mark.parametrize("framework", ["advent", "adaptsegnet", "minent", "source_only"])
def test_frameworks_run_and_differ_only_in_what_the_discriminator_sees(tmp_path, framework):
    stage = make_stage(
        tmp_path, StageSettings(framework=framework, num_iterations=2, max_iters=10, log_steps=1)
    )
    result = stage.run()
    assert result.iterations == 2
    expected = {
        "advent": {"loss_seg", "loss_adv", "loss_d_source", "loss_d_target"},
        "adaptsegnet": {"loss_seg", "loss_adv", "loss_d_source", "loss_d_target"},
        "minent": {"loss_seg", "loss_ent"},
        "source_only": {"loss_seg"},
    }[framework]
    assert {k for k in result.last_losses if k.startswith("loss")} == expected
    assert len(stage.discriminators) == (2 if framework in ("advent", "adaptsegnet") else 0)


def test_adversarial_only_ablation_has_no_segmentation_loss(tmp_path):
    stage = make_stage(
        tmp_path, StageSettings(segmentation_loss=False, num_iterations=1, max_iters=10, log_steps=1)
    )
    assert "loss_seg" not in stage.run().last_losses
    with pytest.raises(ValueError, match="trains nothing"):
        StageSettings(framework="source_only", segmentation_loss=False)


def final_weights(stage: AdaptationStage) -> dict[str, torch.Tensor]:
    weights = {f"g.{k}": v.clone() for k, v in stage.generator.state_dict().items()}
    for i, d in enumerate(stage.discriminators):
        weights.update({f"d{i}.{k}": v.clone() for k, v in d.state_dict().items()})
    return weights


@pytest.mark.parametrize("accumulation", [1, 2])
def test_kill_and_resume_gives_identical_weights(tmp_path, accumulation):
    settings = dict(num_iterations=6, max_iters=10, gradient_accumulation_steps=accumulation, seed=3)
    straight = make_stage(tmp_path / "straight", StageSettings(**settings))
    straight.run()

    first = make_stage(
        tmp_path / "resumed", StageSettings(**{**settings, "num_iterations": 3}, checkpointing_steps=3)
    )
    first.run()  # "killed" after its checkpoint at step 3
    second = make_stage(tmp_path / "resumed", StageSettings(**settings, checkpointing_steps=3))
    second.run(resume_from_checkpoint="latest")
    assert second.completed_steps == 6 and second.micro_step == 6 * accumulation

    a, b = final_weights(straight), final_weights(second)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_errors(tmp_path):
    stage = make_stage(tmp_path, StageSettings(num_iterations=1, max_iters=10))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        stage.run(resume_from_checkpoint="latest")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        stage.run(resume_from_checkpoint=str(tmp_path))


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown framework"):
        StageSettings(framework="fda")
    with pytest.raises(ValueError, match="exceeds the schedule"):
        StageSettings(num_iterations=11, max_iters=10)


def one_iteration(tmp_path, **fast) -> tuple[dict, dict]:
    stage = make_stage(tmp_path, StageSettings(num_iterations=1, max_iters=10, **fast))
    rows = Rows(6, 1, True)
    source = {"pixel_values": rows.images[:2], "labels": rows.labels[:2]}
    target = {"pixel_values": Rows(5, 2, False).images[:2]}
    losses = stage.adversarial_iteration(stage._to_device(source), stage._to_device(target))
    generator = stage.accelerator.unwrap_model(stage.generator)
    grads = {n.replace("_orig_mod.", ""): p.grad.clone() for n, p in generator.named_parameters()}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("fast", [{"channels_last": True}, {"channels_last": True, "torch_compile": True}])
def test_fast_paths_change_no_result_in_fp32(tmp_path, fast):
    plain_losses, plain_grads = one_iteration(tmp_path / "plain")
    fast_losses, fast_grads = one_iteration(tmp_path / "fast", **fast)
    for name in plain_losses:
        torch.testing.assert_close(fast_losses[name], plain_losses[name], rtol=1e-5, atol=1e-5)
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_runs_and_keeps_losses_finite(tmp_path):
    settings = StageSettings(num_iterations=2, max_iters=10, log_steps=1)
    stage = AdaptationStage(
        Accelerator(cpu=True, mixed_precision="bf16"), SegmentationTask(), TinySegmenter(), discriminators(),
        source=(Rows(6, 1, True), 2), target=(Rows(5, 2, False), 2), settings=settings, output_dir=tmp_path,
    )  # fmt: skip
    losses = stage.run().last_losses
    assert all(math.isfinite(v) for v in losses.values()) and "loss_adv" in losses


def test_one_grad_scaler_serves_all_optimizers(tmp_path):
    stage = make_stage(tmp_path, StageSettings(num_iterations=1, max_iters=10))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    stage.accelerator.scaler = scaler  # what Accelerate sets up for fp16 on a GPU
    updates = []
    original_update = scaler.update
    scaler.update = lambda *a, **k: updates.append(1) or original_update(*a, **k)
    rows = Rows(6, 1, True)
    source = {"pixel_values": rows.images[:2], "labels": rows.labels[:2]}
    target = {"pixel_values": Rows(5, 2, False).images[:2]}
    before = [p.detach().clone() for opt in stage.optimizers for g in opt.param_groups for p in g["params"]]
    stage.adversarial_iteration(source, target)
    stage.optimizer_step()
    after = [p.detach() for opt in stage.optimizers for g in opt.param_groups for p in g["params"]]
    assert updates == [1] and scaler.get_scale() == 2048.0  # one update per step, and it grew once
    unchanged = [i for i, (a, b) in enumerate(zip(before, after)) if torch.equal(a, b)]
    assert not unchanged, [tuple(before[i].shape) for i in unchanged]  # G and both D stepped
    assert all(torch.isfinite(a).all() for a in after)

    # An overflow in one discriminator's gradients skips that optimizer's step (PyTorch checks each
    # optimizer's own gradients) and halves the shared scale once, after all steps.
    stage.adversarial_iteration(source, target)
    overflowing = stage.discriminators[0].layers[0].weight
    overflowing.grad[0, 0, 0, 0] = float("inf")
    kept = overflowing.detach().clone()
    stage.optimizer_step()
    assert updates == [1, 1] and scaler.get_scale() == 1024.0
    assert torch.equal(kept, overflowing.detach())


def test_tensorboard_logs_losses_and_pictures(tmp_path):
    pytest.importorskip("tensorboard")
    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path / "logs"))
    accelerator.init_trackers("inter")
    settings = StageSettings(num_iterations=2, max_iters=10, log_steps=1, image_log_steps=1)
    stage = AdaptationStage(
        accelerator, SegmentationTask(), TinySegmenter(), discriminators(),
        source=(Rows(6, 1, True), 2), target=(Rows(5, 2, False), 2), settings=settings, output_dir=tmp_path,
        picture=lambda source, target, outputs: torch.zeros(8, 24, 3, dtype=torch.uint8).numpy(),
    )  # fmt: skip
    stage.run()
    accelerator.end_training()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert {"loss_seg", "loss_adv", "loss_d_source", "loss_d_target", "lr", "lr_d"} <= set(
        events.Tags()["scalars"]
    )
    assert "prediction" in events.Tags()["images"] and len(events.Images("prediction")) == 2


@pytest.mark.parametrize("framework", ["feature", "scores"])
def test_segmentation_refuses_the_classifier_frameworks(framework):
    with pytest.raises(ValueError, match=f"'{framework}' framework is for classifiers"):
        SegmentationTask(framework=framework)


def test_a_non_finite_loss_stops_the_stage_and_saves_nothing(tmp_path):
    # A learning rate this high makes the losses non-finite within a few steps.
    settings = StageSettings(
        num_iterations=20,
        max_iters=20,
        learning_rate=1e12,
        log_steps=5,
        checkpointing_steps=2,
        snapshot_steps=None,
    )
    stage = make_stage(tmp_path, settings)
    with pytest.raises(NonFiniteLossError, match=r"stage .*, step (\d+): loss\w* is (nan|inf)") as info:
        stage.run()
    step = stage.completed_steps
    assert f"step {step}:" in str(info.value) and step < 20
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint*")) if step > 2 else []
    assert f"checkpoint_{step:06d}" not in saved  # the diverged step was never saved


@pytest.mark.parametrize(
    "option, value",
    [("log_steps", 0), ("checkpointing_steps", -1), ("snapshot_steps", -2), ("checkpoints_total_limit", -1)],
)
def test_step_counts_are_validated(option, value):
    with pytest.raises(ValueError, match=option):
        StageSettings(**{option: value})


def test_resuming_applies_a_smaller_checkpoint_limit(tmp_path):
    settings = dict(num_iterations=4, max_iters=10, checkpointing_steps=1)
    make_stage(tmp_path, StageSettings(**settings)).run()
    assert len(list((tmp_path / "checkpoints").iterdir())) == 4
    resumed = make_stage(
        tmp_path, StageSettings(**{**settings, "num_iterations": 4}, checkpoints_total_limit=2)
    )
    resumed.run(resume_from_checkpoint="latest")
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2


def test_a_stage_3_step_from_a_loaded_g_inter_leaves_batchnorm_affine_unchanged(tmp_path):
    # `intra_init: inter`: G_intra starts from `from_pretrained`, which must not make BN affine trainable.
    from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation

    config = DeepLabV2Config(backbone="timm:mobilenetv3_small_050", num_labels=NUM_CLASSES)
    DeepLabV2ForSemanticSegmentation(config).save_pretrained(tmp_path / "inter")
    generator = DeepLabV2ForSemanticSegmentation.from_pretrained(tmp_path / "inter")
    norms = {
        f"{module_name}.{name}"
        for module_name, module in generator.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for name, _ in module.named_parameters()
    }
    affine = {name: p.detach().clone() for name, p in generator.named_parameters() if name in norms}
    assert len(affine) == len(norms) > 0
    convs = {name: p.detach().clone() for name, p in generator.named_parameters() if name not in affine}
    settings = StageSettings(num_iterations=1, max_iters=2, learning_rate=0.05, weight_decay=0.1)
    make_stage(tmp_path / "intra", settings, generator=generator).run()
    trained = dict(generator.named_parameters())
    assert all(torch.equal(trained[name], value) for name, value in affine.items())
    assert any(not torch.equal(trained[name], value) for name, value in convs.items())


def after_unit_gradient_steps(generator: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> dict:
    for parameter in generator.parameters():
        parameter.grad = torch.ones_like(parameter) if parameter.requires_grad else None
    for _ in range(steps):
        optimizer.step()
    return {name: p.detach().clone() for name, p in generator.named_parameters()}


@pytest.mark.parametrize("foreach_by_default", [False, True], ids=["cpu_default", "cuda_default"])
def test_reference_duplicate_params_give_the_plain_loop_update_on_every_device(
    tmp_path, monkeypatch, foreach_by_default
):
    from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation

    def generator() -> DeepLabV2ForSemanticSegmentation:
        torch.manual_seed(0)
        return DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="resnet50", num_labels=NUM_CLASSES))

    def plain_sgd(model: DeepLabV2ForSemanticSegmentation, foreach: bool) -> torch.optim.SGD:
        groups = model.parameter_groups(1e-3, reference_duplicates=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about tensors listed twice
            return torch.optim.SGD(groups, lr=1e-3, momentum=0.9, weight_decay=5e-4, foreach=foreach)

    # CUDA resolves SGD's `foreach=None` to the foreach loop; pretend this CPU does too.
    sgd = importlib.import_module(torch.optim.SGD.__module__)
    monkeypatch.setattr(
        sgd, "_default_to_fused_or_foreach", lambda *args, **kwargs: (False, foreach_by_default)
    )
    settings = StageSettings(num_iterations=1, learning_rate=1e-3, reference_duplicate_params=True)
    stage = make_stage(tmp_path, settings, generator=generator())
    trained = after_unit_gradient_steps(
        stage.accelerator.unwrap_model(stage.generator), stage.generator_optimizer
    )

    plain = generator()
    expected = after_unit_gradient_steps(plain, plain_sgd(plain, foreach=False))
    assert all(torch.equal(trained[name], expected[name]) for name in expected)
    # The foreach loop steps a repeated tensor by another amount: the knob would mean another learning rate.
    plain = generator()
    foreach = after_unit_gradient_steps(plain, plain_sgd(plain, foreach=True))
    name = "backbone.layer1.0.conv1.weight"  # listed 3 times
    assert not torch.allclose(foreach[name], expected[name], rtol=0, atol=1e-6)
