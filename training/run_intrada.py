"""IntraDA's three stages as one Accelerate program, for segmentation and digits.

    accelerate launch training/run_intrada.py [--config FILE.yaml] [--stage inter|rank|intra|eval|all] [overrides]

With no arguments it runs the whole pipeline on the embedded synthetic default (built on first use) with a
small backbone and prints the table of mIoU per stage. The pipeline is `modeling_intrada.training.pipeline`;
`--help` lists every option, docs/training.md the stages and the run folder.
"""

from modeling_intrada.errors import run_program
from modeling_intrada.training.pipeline import main

if __name__ == "__main__":
    run_program(main)
