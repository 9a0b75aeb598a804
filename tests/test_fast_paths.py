"""The training step's optional fast paths give the result of the plain step (fp32 to 1e-5, float64 to 1e-10,
bf16 within 3 %).

Each option is off by default; `test_stage_loop.py` holds the plain step against SPEC section 3. No timing here:
speed is measured by `benchmarks/profile_train_step.py` and `benchmarks/bench_train_step.py`.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from test_stage_loop import NUM_CLASSES, Rows, discriminators, one_iteration
from torch import nn

from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
from modeling_intrada.method.adaptation import SegmentationTask
from modeling_intrada.models.deeplabv2.modeling_deeplabv2 import (
    DeepLabV2SegmenterOutput,
    space_to_batch_conv2d,
)
from modeling_intrada.training import stage_loop
from modeling_intrada.training.stage_loop import AdaptationStage, StageSettings

# bf16 keeps 8 bits of mantissa: one step's losses agree with fp32 to a few parts in a hundred.
BF16_RTOL = 3e-2


# ------------------------------------------------------------------------ space-to-batch atrous convolution
@pytest.mark.parametrize("dilation", [2, 4, 6, 24])
@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_batch_equals_the_dilated_convolution(dilation, channels_last):
    generator = torch.Generator().manual_seed(dilation)
    x = torch.randn(2, 5, 13, 22, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, generator=generator, requires_grad=True)
    expected = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    ours = space_to_batch_conv2d(x.contiguous(memory_format=memory_format), weight, bias, dilation)
    assert ours.shape == expected.shape
    assert ours.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(expected.shape, dtype=torch.float64, generator=generator)
    grads = torch.autograd.grad(expected, (x, weight, bias), upstream)
    our_grads = torch.autograd.grad(ours, (x, weight, bias), upstream)
    for ours_grad, grad in zip(our_grads, grads):
        torch.testing.assert_close(ours_grad, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("implementation", ["space_to_batch", "space_to_batch_backbone"])
def test_space_to_batch_deeplab_gives_the_same_logits_and_gradients(one_thread, implementation):
    # float64: the two implementations sum in different orders, and through 50 layers with batch-statistics
    # BatchNorm the fp32 rounding reaches a few 1e-5; in float64 any difference in the arithmetic would show.
    torch.manual_seed(0)
    plain = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="resnet50", num_labels=NUM_CLASSES))
    config = DeepLabV2Config(
        backbone="resnet50", num_labels=NUM_CLASSES, atrous_implementation=implementation
    )
    fast = DeepLabV2ForSemanticSegmentation(config)
    switched = {m.dilation[0] for m in fast.modules() if getattr(m, "space_to_batch", False)} - {1}
    assert switched == ({2, 4, 6, 12, 18, 24} if implementation == "space_to_batch" else {2, 4})
    fast.load_state_dict(plain.state_dict())
    plain, fast = plain.double(), fast.double()
    pixel_values = torch.randn(1, 3, 41, 57, dtype=torch.float64)
    labels = torch.randint(0, NUM_CLASSES, (1, 41, 57))
    outputs = [model(pixel_values=pixel_values, labels=labels) for model in (plain, fast)]
    for output in outputs:
        output.loss.backward()
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(outputs[1].aux_logits, outputs[0].aux_logits, rtol=1e-10, atol=1e-10)
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-8, atol=1e-10, msg=f"gradient of {name}")


def test_atrous_implementation_is_saved_and_checked(tmp_path):
    config = DeepLabV2Config(backbone="resnet50", num_labels=2, atrous_implementation="space_to_batch")
    config.save_pretrained(tmp_path)
    assert DeepLabV2Config.from_pretrained(tmp_path).atrous_implementation == "space_to_batch"
    assert DeepLabV2Config().atrous_implementation == "dilated"
    with pytest.raises(ValueError, match="atrous_implementation must be one of"):
        DeepLabV2Config(atrous_implementation="winograd")


# ----------------------------------------------------------------------------------- stage-loop options
def assert_same_iteration(fast: tuple[dict, dict], plain: tuple[dict, dict]) -> None:
    (fast_losses, fast_grads), (plain_losses, plain_grads) = fast, plain
    for name in plain_losses:
        torch.testing.assert_close(fast_losses[name], plain_losses[name], rtol=1e-5, atol=1e-5)
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


def test_compiled_discriminator_input_changes_no_result(tmp_path):
    plain = one_iteration(tmp_path / "plain")
    assert_same_iteration(one_iteration(tmp_path / "fast", compile_discriminator_input=True), plain)


@pytest.mark.parametrize("implementation", ["foreach", "fused"])
def test_optimizer_implementations_step_alike(tmp_path, implementation):
    def stepped(folder, **options):
        settings = StageSettings(num_iterations=1, max_iters=10, **options)
        torch.manual_seed(0)
        stage = _stage(folder, settings, TinySegmenter())
        source, target = _batches()
        for _ in range(2):  # the second step uses the momentum and Adam moments of the first
            stage.set_learning_rates(0)
            stage.adversarial_iteration(source, target)
            stage.optimizer_step()
        return [
            p.detach() for optimizer in stage.optimizers for g in optimizer.param_groups for p in g["params"]
        ]

    plain = stepped(tmp_path / "plain")
    fast = stepped(tmp_path / "fast", optimizer_implementation=implementation)
    assert stage_loop.OPTIMIZER_IMPLEMENTATIONS == ("default", "foreach", "fused")
    for p, q in zip(plain, fast):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


def test_compile_mode_is_passed_to_torch_compile(tmp_path, monkeypatch):
    calls = []

    def fake_compile(model, **options):
        calls.append(options)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    settings = StageSettings(
        num_iterations=1, max_iters=10, torch_compile=True, torch_compile_mode="reduce-overhead"
    )
    stage = _stage(tmp_path, settings, TinySegmenter())
    assert calls == [{"dynamic": False, "mode": "reduce-overhead"}] * 3  # G and both D
    stage.adversarial_iteration(*_batches())  # marks a CUDA-graph step (a no-op without CUDA graphs)
    calls.clear()
    _stage(tmp_path, StageSettings(num_iterations=1, max_iters=10, torch_compile=True), TinySegmenter())
    assert calls == [{"dynamic": False, "mode": None}] * 3  # torch's default mode, as before


def test_fast_path_options_are_validated():
    with pytest.raises(ValueError, match="torch_compile_mode is set but torch_compile is not"):
        StageSettings(torch_compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="torch_compile_mode must be one of"):
        StageSettings(torch_compile=True, torch_compile_mode="fastest")
    with pytest.raises(ValueError, match="optimizer_implementation must be one of"):
        StageSettings(optimizer_implementation="apex")
    with pytest.raises(ValueError, match="use it with optimizer_implementation default"):
        StageSettings(optimizer_implementation="fused", reference_duplicate_params=True)
    with pytest.raises(ValueError, match="autocast_policy must be one of"):
        StageSettings(autocast_policy="fp8")


class TinySegmenter(nn.Module):
    """A two-level segmenter with a BatchNorm, so that the BatchNorm policy has something to act on."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.aux = nn.Conv2d(8, NUM_CLASSES, 1)
        self.main = nn.Conv2d(8, NUM_CLASSES, 3, padding=1)

    def forward(self, pixel_values: torch.Tensor) -> DeepLabV2SegmenterOutput:
        features = torch.relu(self.norm(self.body(pixel_values)))
        return DeepLabV2SegmenterOutput(logits=self.main(features), aux_logits=self.aux(features))


def _stage(
    folder, settings: StageSettings, generator: nn.Module, mixed_precision: str = "no"
) -> AdaptationStage:
    return AdaptationStage(
        Accelerator(cpu=True, mixed_precision=mixed_precision), SegmentationTask(), generator, discriminators(),
        source=(Rows(6, 1, True), 2), target=(Rows(5, 2, False), 2), settings=settings, output_dir=folder,
    )  # fmt: skip


def _batches() -> tuple[dict, dict]:
    rows = Rows(6, 1, True)
    return (
        {"pixel_values": rows.images[:2], "labels": rows.labels[:2]},
        {"pixel_values": Rows(5, 2, False).images[:2]},
    )


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_fp32_batchnorm_policy(tmp_path, mixed_precision):
    torch.manual_seed(0)
    reference = TinySegmenter()
    seen = []

    def results(folder, precision: str, policy: str):
        generator = copy.deepcopy(reference)
        settings = StageSettings(num_iterations=1, max_iters=10, autocast_policy=policy)
        stage = _stage(folder, settings, generator, precision)
        hook = generator.norm.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].dtype))
        losses = stage.adversarial_iteration(*_batches())
        hook.remove()
        return {k: v.detach().float() for k, v in losses.items()}, generator.norm.running_mean.clone()

    plain_losses, plain_mean = results(tmp_path / "fp32", "no", "default")
    AcceleratorState._reset_state(reset_partial_state=True)  # the next Accelerator has another precision
    seen.clear()
    losses, mean = results(tmp_path / "policy", mixed_precision, "fp32_batchnorm")
    assert seen and all(dtype == torch.float32 for dtype in seen)  # BatchNorm computed in float32
    assert mean.dtype == torch.float32
    if mixed_precision == "no":  # without autocast the policy changes nothing
        for name in plain_losses:
            assert torch.equal(losses[name], plain_losses[name])
        assert torch.equal(mean, plain_mean)
    else:
        for name in plain_losses:
            torch.testing.assert_close(losses[name], plain_losses[name], rtol=BF16_RTOL, atol=1e-3)
        torch.testing.assert_close(mean, plain_mean, rtol=BF16_RTOL, atol=1e-2)
