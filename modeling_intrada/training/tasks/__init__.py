"""The tasks of the one pipeline: `segmentation` (the paper's main experiments) and `digits` (its section 4.3).

A task is a `Run` subclass: how to build G and the discriminators, which data each stage reads, the stage
list, how to rank and to evaluate, what the cards say. `modeling_intrada.training.pipeline` runs the stages.
"""

from __future__ import annotations

from modeling_intrada.training.arguments import Arguments
from modeling_intrada.training.tasks.base import Run, process_state


def make_run(args: Arguments) -> Run:
    """The run of `args.run.task`, its inputs resolved (segmentation builds the synthetic data if asked)."""
    if args.run.task == "digits":
        from modeling_intrada.training.tasks.digits import DigitsRun

        return DigitsRun(args)
    from modeling_intrada.training.tasks.segmentation import SegmentationRun

    return SegmentationRun(args)


__all__ = ["Run", "make_run", "process_state"]
