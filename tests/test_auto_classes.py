"""Saved folders behave as a Hugging Face user expects: every Auto class that applies loads every saved model
kind with `trust_remote_code=True` in a Python that cannot import this package, and
`pipeline("image-segmentation")` loads a registered segmenter without the trust_remote_code prompt or logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modeling_intrada import (
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    DeepLabV2ImageProcessor,
    DigitClassifier,
    DigitClassifierConfig,
    FCDiscriminator,
    FCDiscriminatorConfig,
    FeatureDiscriminator,
    FeatureDiscriminatorConfig,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# A meta-path finder placed before every other one refuses the package, whatever makes it importable (an
# editable install's finder, PYTHONPATH, the working directory), so the subprocess sees what a user sees who
# only has transformers.
WITHOUT_PACKAGE = """
import sys
class _RefusePackage:
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_intrada" or name.startswith("modeling_intrada."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _RefusePackage())
try:
    import modeling_intrada
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("modeling_intrada is importable")
"""


def run_python(code: str, cwd: Path, *, with_package: bool) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, stdin closed (a prompt fails instead of waiting), offline, one thread."""
    code = textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if with_package:
        env["PYTHONPATH"] = str(PROJECT_ROOT)
    else:
        code = WITHOUT_PACKAGE + code
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """One folder per saved model kind, the segmenter's with its image processor, and a reference input/output."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    models = {
        "segmenter": DeepLabV2ForSemanticSegmentation(
            DeepLabV2Config(backbone="resnet50", id2label={0: "road", 1: "car", 2: "sky"})
        ),
        "fc_discriminator": FCDiscriminator(FCDiscriminatorConfig(num_channels=3, ndf=8)),
        "digit_classifier": DigitClassifier(DigitClassifierConfig(architecture="lenet")),
        "feature_discriminator": FeatureDiscriminator(
            FeatureDiscriminatorConfig(input_size=500, hidden_size=16)
        ),
    }
    inputs = {
        "segmenter": torch.randn(1, 3, 48, 64),
        "fc_discriminator": torch.randn(1, 3, 32, 32),
        "digit_classifier": torch.randn(2, 1, 28, 28),
        "feature_discriminator": torch.randn(2, 500),
    }
    folders = {}
    for kind, model in models.items():
        model.eval().save_pretrained(root / kind)
        with torch.no_grad():
            out = model(inputs[kind])
        out = out if isinstance(out, torch.Tensor) else out.logits
        torch.save({"x": inputs[kind], "y": out}, root / kind / "io.pt")
        folders[kind] = root / kind
    DeepLabV2ImageProcessor(size={"height": 48, "width": 64}).save_pretrained(root / "segmenter")
    return folders


# (folder kind, Auto class, expected class name) for every Auto class that applies to a saved kind.
AUTO_LOADS = [
    ("segmenter", "AutoConfig", "DeepLabV2Config"),
    ("segmenter", "AutoModel", "DeepLabV2ForSemanticSegmentation"),
    ("segmenter", "AutoModelForSemanticSegmentation", "DeepLabV2ForSemanticSegmentation"),
    ("segmenter", "AutoImageProcessor", "DeepLabV2ImageProcessor"),
    ("fc_discriminator", "AutoConfig", "FCDiscriminatorConfig"),
    ("fc_discriminator", "AutoModel", "FCDiscriminator"),
    ("digit_classifier", "AutoConfig", "DigitClassifierConfig"),
    ("digit_classifier", "AutoModel", "DigitClassifier"),
    ("digit_classifier", "AutoModelForImageClassification", "DigitClassifier"),
    ("feature_discriminator", "AutoConfig", "FeatureDiscriminatorConfig"),
    ("feature_discriminator", "AutoModel", "FeatureDiscriminator"),
]


def test_auto_map_names_every_applicable_auto_class(saved):
    for kind, auto_class, class_name in AUTO_LOADS:
        if auto_class == "AutoImageProcessor":
            auto_map = json.loads((saved[kind] / "preprocessor_config.json").read_text())["auto_map"]
        else:
            auto_map = json.loads((saved[kind] / "config.json").read_text())["auto_map"]
        assert auto_map[auto_class].endswith(f".{class_name}"), (kind, auto_class, auto_map)


def test_every_auto_class_loads_every_kind_without_the_package(saved, tmp_path):
    code = f"""
    import sys, torch, transformers
    loads = {AUTO_LOADS!r}
    folders = { ({k: str(v) for k, v in saved.items()})!r}
    for kind, auto_class, class_name in loads:
        obj = getattr(transformers, auto_class).from_pretrained(folders[kind], trust_remote_code=True)
        assert type(obj).__name__ == class_name, (kind, auto_class, type(obj))
        assert type(obj).__module__.startswith("transformers_modules"), (kind, auto_class, type(obj).__module__)
        if auto_class.startswith("AutoModel"):
            io = torch.load(folders[kind] + "/io.pt")
            with torch.no_grad():
                out = obj.eval()(io["x"])
            torch.testing.assert_close(out if isinstance(out, torch.Tensor) else out.logits, io["y"])
        print("OK", kind, auto_class)
    assert not any(name.startswith("modeling_intrada") for name in sys.modules)
    """
    result = run_python(code, tmp_path, with_package=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("OK ") == len(AUTO_LOADS)


def test_pipeline_loads_a_registered_segmenter_without_prompt_or_noise(saved, tmp_path):
    code = f"""
    import numpy as np
    from PIL import Image
    import modeling_intrada
    from transformers import pipeline
    segmenter = pipeline("image-segmentation", model={str(saved["segmenter"])!r})
    assert type(segmenter.model).__module__.startswith("modeling_intrada"), type(segmenter.model)
    result = segmenter(Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)))
    print("LABELS", sorted(r["label"] for r in result))
    """
    result = run_python(code, tmp_path, with_package=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LABELS" in result.stdout
    for noise in (
        "[y/N]",
        "trust_remote_code",
        "not supported",
        "backend is not available",
        "VideoProcessor",
    ):
        assert noise not in result.stderr, result.stderr[-3000:]


def test_pipeline_with_trust_remote_code_without_the_package(saved, tmp_path):
    code = f"""
    import numpy as np
    from PIL import Image
    from transformers import pipeline
    segmenter = pipeline("image-segmentation", model={str(saved["segmenter"])!r}, trust_remote_code=True)
    result = segmenter(Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)))
    assert {{r["label"] for r in result}} <= {{"road", "car", "sky"}}
    print("OK")
    """
    result = run_python(code, tmp_path, with_package=False)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
    assert "[y/N]" not in result.stderr
