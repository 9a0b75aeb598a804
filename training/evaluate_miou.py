"""Evaluate a segmenter's mIoU on a labelled split at full label resolution (SPEC section 6).

    python training/evaluate_miou.py --model outputs/intrada-synthetic/intra/model --dataset synthetic \\
        --dataset_config target_val --split validation --output_dir eval-intra
    accelerate launch --num_processes 4 training/evaluate_miou.py --model <user>/intrada-gta5 \\
        --dataset <user>/cityscapes --split validation --output_dir eval-cityscapes
    python training/evaluate_miou.py --snapshots_dir outputs/intrada-synthetic/intra/snapshots \\
        --selection last min_entropy best_val --output_dir eval-snapshots

Images are resized to the model's input size (its image processor's, or `--input_size`), the logits
upsampled bilinearly to each label map's own size (Cityscapes: 1024x512 input, 2048x1024 labels) and
counted in one confusion matrix, summed over processes. Writes into `--output_dir`:

    metrics.json        per result: model, iteration, how it was selected, scores per protocol, confusion matrix
    results.md          one Table-1-style markdown table per protocol, with the selection of each row said
    predictions/<result>/NNNN_<id>.png   image | prediction | ground truth, colour-coded, first K images
    snapshots.json      with --snapshots_dir: every snapshot's mean target entropy (and mIoU for best_val)

Model selection (`--snapshots_dir`, SPEC section 6): the **last** snapshot is always reported;
`min_entropy` adds the snapshot with the lowest mean prediction entropy on the unlabelled target training
images (label-free); `best_val` adds the snapshot with the best mIoU on the evaluation labels themselves,
an oracle choice that is named as such everywhere it appears.

Several processes (`accelerate launch`): batch b runs on process b mod W (`evaluation.sharded_batches`),
never through a prepared DataLoader, whose default `even_batches=True` would repeat images to fill the
last batch and count them twice; the confusion matrices are summed with `accelerator.reduce`.
"""

from modeling_intrada.evaluation.evaluator import main

if __name__ == "__main__":
    main()
