"""modeling_intrada.publishing.hub end to end against a loopback Hub (tests/hub_server.py): push a real (tiny) run with
`training/push_to_hub.py`, then read it back through the same endpoint with `from_pretrained` (the model's own
code, `trust_remote_code`) and `load_dataset`; a failed upload keeps everything local and names the retry.

The Hub clients run in subprocesses whose environment points `HF_ENDPOINT` at the server (huggingface_hub
reads it at import), with a private `HF_HOME`: nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hub_server import FakeHub
from huggingface_hub import DatasetCard, ModelCard

from modeling_intrada import DeepLabV2ForSemanticSegmentation, FCDiscriminator
from modeling_intrada.publishing.cards import measured_mean_ious, write_run_cards
from modeling_intrada.publishing.hub import push_run_to_hub

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL, RANKING = "someone/intrada-tiny", "someone/intrada-tiny-ranking"

# Runs in a fresh interpreter that never imports modeling_intrada: the model loads with its own code.
LOADER = """
import json, sys
import numpy as np, torch
from datasets import load_dataset
from transformers import AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

out = sys.argv[1]
model = AutoModelForSemanticSegmentation.from_pretrained("{model}", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("{model}", trust_remote_code=True)
discriminator = AutoModel.from_pretrained("{model}", subfolder="discriminators/main", trust_remote_code=True)
torch.manual_seed(0)
pixel_values = torch.randn(1, 3, 32, 64)
with torch.inference_mode():
    np.save(out + "/logits.npy", model(pixel_values=pixel_values).logits.numpy())
    np.save(out + "/discriminator.npy", discriminator(torch.softmax(torch.randn(1, 19, 32, 64), 1)).numpy())
splits = load_dataset("{ranking}", split="train")
rows = [dict(id=r["id"], rank=r["rank"], split=r["split"], score=r["score"],
             label=None if r["pseudo_label"] is None else np.asarray(r["pseudo_label"]).tolist()) for r in splits]
json.dump(dict(model_class=type(model).__module__, processor=processor.to_dict(), rows=rows,
               imported=[m for m in sys.modules if m.startswith("modeling_intrada")]), open(out + "/read.json", "w"))
"""


# A real tiny run of run_intrada.py (`tiny`, from conftest), on one torch thread.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def hub():
    server = FakeHub()
    server.start()
    yield server
    server.stop()
    assert not server.unhandled, f"requests the fake hub does not implement: {server.unhandled}"


def _environment(hub: FakeHub, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(home),
        HF_TOKEN="hf_loopback_test_token",
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        OMP_NUM_THREADS="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def _run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def _tree_digest(folder: Path, cards: bool = True) -> dict[str, str]:
    """sha256 of every file under `folder`; without the cards (README.md) when `cards` is false."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (cards or p.name != "README.md")
    }


@pytest.mark.slow
def test_push_fail_retry_and_read_back(tiny, hub, tmp_path):
    run_dir, _ = tiny
    env = _environment(hub, tmp_path / "hf_home")
    before = _tree_digest(run_dir, cards=False)
    hub.fail_commits = {RANKING}  # the dataset commit answers 500
    push = [sys.executable, "training/push_to_hub.py", "--output_dir", str(run_dir), "--hub_model_id", MODEL,
            "--ranking_repo_id", RANKING, "--push_discriminators", "--private"]  # fmt: skip
    failed = _run(push, env)

    # The failure: exit status 1, what failed, what was pushed, nothing local changed but the cards, which
    # now name the repositories, and the retry command.
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "Upload of the ranking splits failed" in failed.stderr and "500" in failed.stderr
    assert f"Pushed: the model -> {hub.endpoint}/{MODEL}/commit/" in failed.stderr
    assert (
        f"Nothing local was changed but the pushed cards (README.md), which name their repositories: {run_dir} is intact."
        in failed.stderr
    )
    retry = failed.stderr.split("Retry what failed with: ")[1].strip().splitlines()[0]
    words = shlex.split(retry)
    assert words[:2] == ["python", "training/push_to_hub.py"]
    assert "--skip_model" in words and words[words.index("--ranking_repo_id") + 1] == RANKING
    assert _tree_digest(run_dir, cards=False) == before
    assert ("dataset", RANKING) in hub.repos and not hub.repo(RANKING, "dataset").files

    # What the model repository received: the run's files byte for byte, the cards as written in the run.
    model_repo = hub.repo(MODEL)
    assert model_repo.private
    model_dir = run_dir / "intra" / "model"
    for path in model_dir.iterdir():
        assert model_repo.files[path.name] == path.read_bytes(), path.name
    assert json.loads(model_repo.files["config.json"])["auto_map"]["AutoModelForSemanticSegmentation"]
    for level in ("aux", "main"):
        local = run_dir / "intra" / "discriminators" / level / "model.safetensors"
        assert model_repo.files[f"discriminators/{level}/model.safetensors"] == local.read_bytes()
        assert (
            model_repo.files[f"discriminators/{level}/README.md"] == local.with_name("README.md").read_bytes()
        )
    assert model_repo.files["run/config.yaml"] == (run_dir / "config.yaml").read_bytes()
    card = ModelCard(model_repo.files["README.md"].decode())
    measured = json.loads((run_dir / "eval" / "metrics.json").read_text())["results"]["G_intra"]["scores"][
        "19"
    ]
    assert measured_mean_ious(card) == {
        "mIoU (19 classes, last snapshot)": pytest.approx(100 * measured["mean_iou"], abs=0.005)
    }
    assert (
        RANKING in card.data.datasets and f'from_pretrained("{MODEL}", trust_remote_code=True)' in card.text
    )

    # The retry pushes only what failed.
    hub.fail_commits = set()
    commits_before = list(model_repo.commits)
    retried = _run([sys.executable, *words[1:]], env)
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert model_repo.commits == commits_before
    ranking_repo = hub.repo(RANKING, "dataset")
    assert ranking_repo.private and "--private" in words  # created private by the first attempt
    for name in ("ranking.json", "ranking.png", "data/train-00000-of-00001.parquet"):
        assert ranking_repo.files[name] == (run_dir / "ranking" / name).read_bytes()
    assert ranking_repo.files["README.md"] == (run_dir / "ranking" / "README.md").read_bytes()
    dataset_card = DatasetCard(ranking_repo.files["README.md"].decode())
    assert dataset_card.data.configs[0]["data_files"][0]["path"] == "data/train-*.parquet"
    # The pushed cards are the cards write_run_cards writes with the same repository ids.
    pushed_cards = ["intra/model", "intra/discriminators/aux", "intra/discriminators/main", "ranking"]
    pushed = {folder: (run_dir / folder / "README.md").read_bytes() for folder in pushed_cards}
    write_run_cards(run_dir, repo_id=MODEL, ranking_repo_id=RANKING)  # also rewrites G_inter's, not pushed
    assert {folder: (run_dir / folder / "README.md").read_bytes() for folder in pushed_cards} == pushed

    # Read everything back through the endpoint, in an interpreter without modeling_intrada.
    (tmp_path / "loader.py").write_text(LOADER.format(model=MODEL, ranking=RANKING))
    read = _run([sys.executable, str(tmp_path / "loader.py"), str(tmp_path)], env)
    assert read.returncode == 0, read.stderr[-3000:]
    result = json.loads((tmp_path / "read.json").read_text())
    assert result["imported"] == [] and result["model_class"].startswith("transformers_modules.")

    local = DeepLabV2ForSemanticSegmentation.from_pretrained(model_dir).eval()
    discriminator = FCDiscriminator.from_pretrained(run_dir / "intra" / "discriminators" / "main").eval()
    torch.manual_seed(0)  # the loader's inputs, drawn in the same order
    pixel_values = torch.randn(1, 3, 32, 64)
    maps = torch.softmax(torch.randn(1, 19, 32, 64), 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the loader (OMP_NUM_THREADS=1): the same summation order, bit for bit
    try:
        with torch.inference_mode():
            expected = local(pixel_values=pixel_values).logits.numpy()
            expected_discriminator = discriminator(maps).numpy()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)  # identical, not close
    np.testing.assert_array_equal(np.load(tmp_path / "discriminator.npy"), expected_discriminator)
    processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert result["processor"]["size"] == processor["size"]
    assert result["processor"]["normalization"] == processor["normalization"]

    table = pq.read_table(run_dir / "ranking" / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert [(r["id"], r["rank"], r["split"], r["score"]) for r in result["rows"]] == [
        (r["id"], r["rank"], r["split"], r["score"]) for r in table
    ]
    from PIL import Image

    for row, stored in zip(result["rows"], table):
        if stored["pseudo_label"] is None:
            assert row["label"] is None and row["split"] == "hard"
        else:
            import io

            local_label = np.asarray(Image.open(io.BytesIO(stored["pseudo_label"]["bytes"])))
            np.testing.assert_array_equal(np.asarray(row["label"], dtype=np.uint8), local_label)


def test_dry_run_checks_everything_and_writes_nothing(tiny):
    run_dir, _ = tiny
    before = _tree_digest(run_dir)
    plans = push_run_to_hub(run_dir, MODEL, ranking_repo_id=RANKING, stage="inter", dry_run=True)
    card = run_dir / "inter" / "model" / "README.md"
    assert "inter/model/model.safetensors" in plans["model"]
    assert f"README.md <- {card} (card, written before the upload" in plans["model"]
    assert "discriminators/" not in plans["model"]
    assert "data/train-00000-of-00001.parquet" in plans["ranking splits"]
    assert _tree_digest(run_dir) == before


def test_a_model_without_auto_map_is_refused_before_any_upload(tiny, tmp_path):
    import shutil

    run_dir, _ = tiny
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("snapshots", "predictions"))
    config_path = copy / "intra" / "model" / "config.json"
    config = json.loads(config_path.read_text())
    del config["auto_map"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has no auto_map"):
        push_run_to_hub(copy, MODEL)  # would need the network if the check came after the upload


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hub_model_id": None}, "hub_model_id is required"),
        ({"hub_model_id": None, "push_model": False}, "nothing to push"),
        ({"hub_model_id": MODEL, "stage": "middle"}, "stage must be one of"),
    ],
)
def test_argument_errors(tiny, kwargs, message):
    run_dir, _ = tiny
    with pytest.raises(ValueError, match=message):
        push_run_to_hub(run_dir, dry_run=True, **kwargs)


@pytest.mark.slow
def test_training_program_pushes_at_the_end(tiny, hub, tmp_path):
    """run_intrada.py --push_to_hub: the eval stage of a finished run, then the model and the ranking splits."""
    import shutil

    run_dir, _ = tiny
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("snapshots", "predictions"))
    command = [sys.executable, "training/run_intrada.py", "--config", str(run_dir / "config.yaml"),
               "--output_dir", str(copy), "--stage", "eval", "--max_val_images", "2",
               "--push_to_hub", "--hub_model_id", MODEL, "--hub_private_repo"]  # fmt: skip
    finished = _run(command, _environment(hub, tmp_path / "hf_home"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    model_repo, ranking_repo = hub.repo(MODEL), hub.repo(f"{MODEL}-ranking", "dataset")
    assert model_repo.private and ranking_repo.private
    assert (
        model_repo.files["model.safetensors"] == (copy / "intra" / "model" / "model.safetensors").read_bytes()
    )
    assert ranking_repo.files["ranking.json"] == (copy / "ranking" / "ranking.json").read_bytes()
    measured = json.loads((copy / "eval" / "metrics.json").read_text())["results"]["G_intra"]["scores"]["19"]
    assert model_repo.files["README.md"] == (copy / "intra" / "model" / "README.md").read_bytes()
    card = ModelCard(model_repo.files["README.md"].decode())
    (value,) = measured_mean_ious(card).values()
    assert value == pytest.approx(100 * measured["mean_iou"], abs=0.005)
    assert card.data.eval_results[0].dataset_split == "validation[:2]"  # the 2-image evaluation, named so


def test_push_to_hub_needs_a_model_id():
    from modeling_intrada.training.arguments import parse_arguments

    with pytest.raises(ValueError, match="needs --hub_model_id"):
        parse_arguments(["--push_to_hub"])


EVALUATOR = """
import sys
from huggingface_hub import HfApi
from modeling_intrada.evaluation.evaluator import main
from modeling_intrada.publishing.hub import push_run_to_hub

run_dir, data, out = sys.argv[1:4]
push_run_to_hub(run_dir, "{model}")
HfApi().create_repo("{dataset}", repo_type="dataset")
HfApi().upload_folder(repo_id="{dataset}", repo_type="dataset", folder_path=data)
main(["--model", "{model}", "--dataset", "{dataset}", "--dataset_config", "target_val", "--split", "validation",
      "--num_workers", "0", "--num_pictures", "1", "--output_dir", out])
"""


@pytest.mark.slow
def test_evaluate_a_hub_model_on_a_hub_dataset(tiny, hub, tmp_path):
    """evaluate_miou.py with a Hub model id and a Hub dataset id gives the local evaluation's matrix."""
    from modeling_intrada.evaluation.evaluator import main as evaluate_main

    run_dir, data = tiny
    dataset_id = "someone/synthetic-tiny"
    (tmp_path / "evaluator.py").write_text(EVALUATOR.format(model=MODEL, dataset=dataset_id))
    env = _environment(hub, tmp_path / "hf_home")
    env["PYTHONPATH"] = str(PROJECT_ROOT / "training")
    finished = _run(
        [sys.executable, str(tmp_path / "evaluator.py"), str(run_dir), str(data), str(tmp_path / "hub")], env
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    remote = json.loads((tmp_path / "hub" / "metrics.json").read_text())
    local = evaluate_main(
        ["--model", str(run_dir / "intra" / "model"), "--dataset", str(data), "--dataset_config", "target_val",
         "--num_workers", "0", "--num_pictures", "0", "--output_dir", str(tmp_path / "local")]
    )  # fmt: skip
    assert remote["dataset"]["name"] == dataset_id and remote["dataset"]["num_images"] == 4
    assert remote["results"]["model"]["model"] == MODEL
    assert remote["results"]["model"]["confusion_matrix"] == local["results"]["model"]["confusion_matrix"]
