"""IntraDA's stages as one Accelerate program, for segmentation and for digits.

    accelerate launch training/run_intrada.py [--config FILE.yaml] [--task segmentation|digits] [--stage S] [overrides]

With no arguments it runs the whole segmentation pipeline on the embedded synthetic default (built on first use)
with a small backbone and prints the table of mIoU per stage; `--config training/configs/digits_*.yaml`
(`task: digits`) runs the digits experiments. Outputs, per stage, under `--output_dir`:

    config.yaml               every option of the run
    source/model/             digits only: the source-only classifier
    inter/model/              G_inter (save_pretrained), inter/discriminators/<level>/
    inter/checkpoints/, inter/snapshots/iter_XXXXXX/
    ranking/                  the ranking-splits dataset (Parquet + card + ranking.json + ranking.png)
    intra/model/ ...          G_intra, as inter/
    eval/                     metrics.json, results.md

See docs/training.md and docs/digits.md.
"""

from modeling_intrada.training.pipeline import main

if __name__ == "__main__":
    main()
