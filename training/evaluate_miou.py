"""Evaluate a segmenter's mIoU on a labelled split at full label resolution (SPEC section 6).

    python training/evaluate_miou.py --model outputs/intrada-synthetic/intra/model --dataset synthetic \\
        --dataset_config target_val --split validation --output_dir eval-intra
    accelerate launch --num_processes 4 training/evaluate_miou.py --model <user>/intrada-gta5 \\
        --dataset <user>/cityscapes --split validation --output_dir eval-cityscapes
    python training/evaluate_miou.py --snapshots_dir outputs/intrada-synthetic/intra/snapshots \\
        --selection last min_entropy best_val --output_dir eval-snapshots

The evaluator is `modeling_intrada.evaluation.evaluator` (the same code as `run_intrada.py --stage eval`);
`--help` lists every option, docs/evaluation_and_publishing.md explains the outputs and selection rules.
"""

from modeling_intrada.errors import run_program
from modeling_intrada.evaluation.evaluator import main

if __name__ == "__main__":
    run_program(main)
