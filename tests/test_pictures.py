"""Pictures a reader understands: titled panels, the ground truth where labels exist, a legend of the classes
present in the Cityscapes colours, a colour bar for the entropy; in TensorBoard and beside eval/predictions."""

from __future__ import annotations

import numpy as np
from PIL import Image

from modeling_intrada.evaluation.pictures import build_segmentation_figure, segmentation_figure
from modeling_intrada.labels import CITYSCAPES


def inputs():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    prediction = np.zeros((32, 64), np.uint8)
    prediction[:, 32:] = 13  # road | car
    label = np.full((32, 64), 255, np.uint8)
    label[16:, :] = 10  # sky where labelled, ignore above
    return image, prediction, label, rng.random((32, 64))


def test_figure_titles_legend_and_colour_bar():
    import matplotlib.pyplot as plt

    image, prediction, label, entropy = inputs()
    figure = build_segmentation_figure(
        image, prediction, CITYSCAPES, label, entropy, title="G_intra: frame 1"
    )
    try:
        titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
        assert titles == ["Image", "Prediction", "Ground truth", "Entropy (normalised)"]
        assert figure._suptitle.get_text() == "G_intra: frame 1"
        (legend,) = figure.legends
        assert [text.get_text() for text in legend.get_texts()] == ["road", "sky", "car"]
        colours = [
            tuple(np.round(np.asarray(h.get_facecolor()[:3]) * 255).astype(int))
            for h in legend.legend_handles
        ]
        assert colours == [CITYSCAPES.palette[0], CITYSCAPES.palette[10], CITYSCAPES.palette[13]]
        assert len(figure.axes) == 5  # four panels and the entropy's colour bar
    finally:
        plt.close(figure)


def test_figure_without_labels_or_entropy_has_fewer_panels():
    image, prediction, label, entropy = inputs()
    full = segmentation_figure(image, prediction, CITYSCAPES, label, entropy)
    bare = segmentation_figure(image, prediction, CITYSCAPES)
    assert full.dtype == np.uint8 and full.ndim == 3 and full.shape[2] == 3
    assert bare.shape[1] < full.shape[1]


def test_evaluation_writes_a_figure_beside_each_prediction(tiny):
    run_dir, _ = tiny
    for result in ("G_inter", "G_intra"):
        strips = sorted(p.name for p in (run_dir / "eval" / "predictions" / result).glob("*.png"))
        figures = run_dir / "eval" / "figures" / result
        assert strips and sorted(p.name for p in figures.glob("*.png")) == strips
        figure = np.asarray(Image.open(figures / strips[0]))
        assert figure.shape[0] > 100 and figure.shape[1] > figure.shape[0]  # titled panels, legend below
