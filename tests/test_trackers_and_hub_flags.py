"""The flags users bring from the diffusers and transformers examples: `--hub_token` (or HF_TOKEN), never saved;
`--logging_dir` and `--tracker_project_name` for the trackers; the evaluation's mIoU and per-class IoU logged to
the trackers beside the losses."""

from __future__ import annotations

import shutil

import pytest
import yaml
from tiny_run import tiny_run_arguments

import modeling_intrada.training.pipeline as pipeline
from modeling_intrada.training.arguments import parse_arguments, run_config


def test_the_hub_token_is_an_option_but_never_saved():
    args = parse_arguments(["--hub_token", "hf_secret", "--push_to_hub", "--hub_model_id", "u/m"])
    assert args.run.hub_token == "hf_secret"
    assert "hub_token" not in run_config(args) and "hf_secret" not in yaml.safe_dump(run_config(args))
    assert (
        parse_arguments([]).run.logging_dir == "logs" and parse_arguments([]).run.tracker_project_name is None
    )


def test_evaluation_goes_to_the_trackers_in_the_logging_dir_and_project(tiny, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, data = tiny
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    pushed = {}
    monkeypatch.setattr(pipeline, "push_run_to_hub", lambda *args, **kwargs: pushed.update(kwargs))
    flags = ["--report_to", "tensorboard", "--logging_dir", "tb", "--tracker_project_name", "my-project"]
    flags += ["--push_to_hub", "--hub_model_id", "u/m", "--hub_token", "hf_secret"]
    document = pipeline.main([*tiny_run_arguments(copy, data), "--stage", "eval", *flags])

    assert pushed["token"] == "hf_secret" and "hf_secret" not in (copy / "config.yaml").read_text()
    events = list((copy / "tb" / "eval" / "my-project").glob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(copy) for p in copy.rglob("*tfevents*"))
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    scores = document["results"]["G_intra"]["scores"]["19"]
    assert accumulator.Scalars("eval/G_intra/19/mean_iou")[0].value == pytest.approx(scores["mean_iou"])
    assert {f"eval/{key}/19/iou/road" for key in ("G_inter", "G_intra")} <= tags


def test_the_poly_schedule_gives_transformers_values_per_global_step():
    """The loop keeps its own `poly_learning_rate` (set from the global step, nothing to checkpoint, heads x10
    through `lr_multiplier`); it gives exactly the values of transformers' polynomial schedule."""
    import torch
    from transformers import get_polynomial_decay_schedule_with_warmup

    from modeling_intrada.method.adaptation import poly_learning_rate

    base, max_iters = 2.5e-4, 500
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    schedule = get_polynomial_decay_schedule_with_warmup(optimizer, 0, max_iters, lr_end=0.0, power=0.9)
    for step in range(max_iters):
        assert optimizer.param_groups[0]["lr"] == poly_learning_rate(base, step, max_iters), step
        optimizer.step()
        schedule.step()
