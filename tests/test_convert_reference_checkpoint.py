"""The converter reproduces the authors' logits from state dicts in their key layout (SPEC sections 1, 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from transformers import AutoModel, AutoModelForSemanticSegmentation

from benchmarks.reference_deeplab import RefResNetMulti, randomize_batchnorm, ref_fc_discriminator
from modeling_intrada import FCDiscriminator
from modeling_intrada.models.deeplabv2.convert_reference_checkpoint import (
    convert_checkpoint,
    detect_kind,
    main,
)


@pytest.fixture(scope="module")
def reference_model() -> RefResNetMulti:
    torch.manual_seed(1)
    model = RefResNetMulti(layers=(3, 4, 23, 3), num_classes=19, multi_level=True)
    randomize_batchnorm(model)
    return model.eval()


def test_generator_checkpoint_reproduces_reference_logits(reference_model, tmp_path):
    checkpoint = tmp_path / "gta2cityscapes_advent.pth"
    torch.save(reference_model.state_dict(), checkpoint)
    assert detect_kind(reference_model.state_dict()) == "generator"
    out = convert_checkpoint(checkpoint, tmp_path / "converted", num_labels=19)
    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        aux, main_logits = reference_model(x)
        converted = model(x)
    torch.testing.assert_close(converted.logits, main_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(converted.aux_logits, aux, atol=1e-5, rtol=1e-5)
    assert model.config.id2label[0] == "road" and model.config.num_labels == 19
    assert (out / "preprocessor_config.json").is_file()


def test_wrapped_and_dataparallel_checkpoints(reference_model, tmp_path):
    state_dict = {f"module.{k}": v for k, v in reference_model.state_dict().items()}
    checkpoint = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state_dict, "iteration": 120000}, checkpoint)
    model = AutoModelForSemanticSegmentation.from_pretrained(
        convert_checkpoint(checkpoint, tmp_path / "o")
    ).eval()
    x = torch.randn(1, 3, 41, 41)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference_model(x)[1], atol=1e-5, rtol=1e-5)


def test_single_level_checkpoint(tmp_path):
    reference = RefResNetMulti(layers=(3, 4, 6, 3), num_classes=16, multi_level=False)
    randomize_batchnorm(reference)
    reference.eval()
    out = convert_checkpoint(reference.state_dict(), tmp_path / "single", single_level=True)
    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    assert model.aux_head is None and model.config.backbone == "resnet50" and model.config.num_labels == 16
    x = torch.randn(1, 3, 49, 57)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x)[1], atol=1e-5, rtol=1e-5)


def test_imagenet_init_file_with_scale_prefix(tmp_path):
    reference = RefResNetMulti(layers=(3, 4, 6, 3), num_classes=21, multi_level=True)
    state_dict = {f"Scale.{k}": v for k, v in reference.state_dict().items() if not k.startswith("layer6")}
    assert detect_kind(state_dict) == "imagenet"
    out = convert_checkpoint(state_dict, tmp_path / "init")
    model = AutoModelForSemanticSegmentation.from_pretrained(out)
    assert torch.equal(model.backbone.layer3[2].conv2.weight, reference.layer3[2].conv2.weight)
    assert model.config.num_labels == 19  # the ASPP of the init file (21 classes) is skipped
    assert abs(model.main_head.convs[0].weight.std().item() - 0.01) < 2e-3


def test_discriminator_checkpoint(tmp_path):
    reference = ref_fc_discriminator(19)
    checkpoint = tmp_path / "d_main.pth"
    torch.save(reference.state_dict(), checkpoint)
    out = convert_checkpoint(checkpoint, tmp_path / "d")
    discriminator = AutoModel.from_pretrained(out)
    assert isinstance(discriminator, FCDiscriminator)
    x = torch.randn(1, 19, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(discriminator(x), reference(x))


def test_missing_and_extra_keys_are_refused(reference_model, tmp_path):
    state_dict = dict(reference_model.state_dict())
    del state_dict["layer3.4.conv2.weight"]
    with pytest.raises(ValueError, match=r"missing keys.*layer3.4.conv2.weight"):
        convert_checkpoint(state_dict, tmp_path / "a")
    state_dict = dict(reference_model.state_dict())
    state_dict["layer7.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected keys.*layer7.weight"):
        convert_checkpoint(state_dict, tmp_path / "b")
    state_dict = dict(reference_model.state_dict())
    state_dict["layer6.conv2d_list.0.weight"] = torch.zeros(19, 2048, 1, 1)
    with pytest.raises(ValueError, match="shape mismatches"):
        convert_checkpoint(state_dict, tmp_path / "c")
    with pytest.raises(ValueError, match="predict 19 classes"):
        convert_checkpoint(reference_model.state_dict(), tmp_path / "d", num_labels=16)
    with pytest.raises(ValueError, match="auxiliary head"):
        convert_checkpoint(reference_model.state_dict(), tmp_path / "e", single_level=True)
    with pytest.raises(ValueError, match="Unrecognised checkpoint"):
        convert_checkpoint({"foo.weight": torch.zeros(1)}, tmp_path / "f")
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_cli(tmp_path, capsys):
    reference = ref_fc_discriminator(5)
    torch.save(reference.state_dict(), tmp_path / "d.pth")
    main(["--checkpoint", str(tmp_path / "d.pth"), "--output_dir", str(tmp_path / "out")])
    assert "Converted" in capsys.readouterr().out
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeling_intrada.models.deeplabv2.convert_reference_checkpoint",
            "--checkpoint",
            str(tmp_path / "missing.pth"),
            "--output_dir",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "not found" in result.stderr


def test_output_dir_naming_a_file_is_refused(tmp_path):
    torch.save(ref_fc_discriminator(5).state_dict(), tmp_path / "d.pth")
    (tmp_path / "out").write_text("mine")
    with pytest.raises(ValueError, match="is a file: expected a folder"):
        convert_checkpoint(tmp_path / "d.pth", tmp_path / "out")
    assert (tmp_path / "out").read_text() == "mine"


def test_a_folder_of_other_files_is_not_replaced(tmp_path):
    torch.save(ref_fc_discriminator(5).state_dict(), tmp_path / "d.pth")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no saved model"):
        convert_checkpoint(tmp_path / "d.pth", tmp_path / "mine")
    convert_checkpoint(tmp_path / "d.pth", tmp_path / "out")
    convert_checkpoint(tmp_path / "d.pth", tmp_path / "out")  # an earlier conversion is replaced whole
    assert (tmp_path / "mine" / "thesis.tex").is_file() and (tmp_path / "out" / "config.json").is_file()
    assert not (tmp_path / "out.incomplete").exists()
