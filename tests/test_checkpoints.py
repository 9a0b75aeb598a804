"""Checkpoint folders as in the Accelerate and diffusers examples (`checkpoint-<step>`), the older
`checkpoint_<000020>` still resumed, the newest K kept by step, and resume bit-identical through either name."""

from __future__ import annotations

import torch
from test_stage_loop import final_weights, make_stage

from modeling_intrada.run_layout import checkpoint_name, checkpoint_step
from modeling_intrada.training.stage_loop import STATE_FILE, StageSettings, list_checkpoints


def test_names_and_steps():
    assert checkpoint_name(20) == "checkpoint-20"
    assert checkpoint_step("checkpoint-20") == 20 and checkpoint_step("checkpoint_000020") == 20
    assert checkpoint_step("checkpoint-20.incomplete") is None and checkpoint_step("checkpoint") is None


def test_listing_orders_by_step_and_skips_incomplete_folders(tmp_path):
    for name in ("checkpoint-100", "checkpoint-20", "checkpoint_000050", "checkpoint-9"):
        (tmp_path / name).mkdir()
        (tmp_path / name / STATE_FILE).write_text("{}")
    (tmp_path / "checkpoint-200.incomplete").mkdir()  # a save that did not finish
    (tmp_path / "checkpoint-300").mkdir()  # no loop state: not complete
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint-9", "checkpoint-20", "checkpoint_000050", "checkpoint-100"]


def test_saves_as_checkpoint_step_and_keeps_the_newest_by_step(tmp_path):
    stage = make_stage(
        tmp_path,
        StageSettings(num_iterations=10, max_iters=10, checkpointing_steps=3, checkpoints_total_limit=2),
    )
    stage.run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-6", "checkpoint-9"]


def test_resume_from_an_old_name_is_bit_identical(tmp_path):
    settings = dict(num_iterations=4, max_iters=10, seed=3)
    straight = make_stage(tmp_path / "straight", StageSettings(**settings))
    straight.run()
    first = make_stage(
        tmp_path / "resumed", StageSettings(**{**settings, "num_iterations": 2}, checkpointing_steps=2)
    )
    first.run()
    checkpoints = tmp_path / "resumed" / "checkpoints"
    (checkpoints / "checkpoint-2").rename(checkpoints / "checkpoint_000002")  # a run saved under the old name
    second = make_stage(tmp_path / "resumed", StageSettings(**settings))
    second.run(resume_from_checkpoint="latest")
    assert second.completed_steps == 4
    a, b = final_weights(straight), final_weights(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
