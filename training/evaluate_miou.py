"""Evaluate a segmenter's mIoU on a labelled split at full label resolution (SPEC section 6).

    python training/evaluate_miou.py --model FOLDER_OR_HUB_ID --dataset DATASET --output_dir DIR
    accelerate launch training/evaluate_miou.py --snapshots_dir RUN/intra --selection last min_entropy ...

The evaluator is `modeling_intrada.evaluation.evaluator` (the same code as `run_intrada.py --stage eval`);
`--help` lists every option, docs/evaluation_and_publishing.md explains the outputs and selection rules.
"""

from modeling_intrada.errors import run_program
from modeling_intrada.evaluation.evaluator import main

if __name__ == "__main__":
    run_program(main)
