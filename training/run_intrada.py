"""IntraDA's three stages as one Accelerate program.

    accelerate launch training/run_intrada.py [--config FILE.yaml] [--stage inter|rank|intra|eval|all] [overrides]

With no arguments it runs the whole pipeline on the embedded synthetic default (built on first use) with a
small backbone and prints the table of mIoU per stage. Outputs, per stage, under `--output_dir`:

    config.yaml               every option of the run
    inter/model/              G_inter (save_pretrained + image processor), inter/discriminators/{aux,main}/
    inter/checkpoints/, inter/snapshots/iter_XXXXXX/
    ranking/                  the ranking-splits dataset (Parquet + card + ranking.json + ranking.png)
    intra/model/ ...          G_intra, as inter/
    eval/                     metrics.json, results.md, predictions of the first images
"""

from modeling_intrada.training.pipeline import main

if __name__ == "__main__":
    main()
