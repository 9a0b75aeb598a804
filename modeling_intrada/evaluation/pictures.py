"""Labelled pictures of a segmentation: titled panels (image, prediction, ground truth, entropy), a legend of the
classes present in the label space's colours and a colour bar for the entropy, as one RGB array.

Used for the TensorBoard images of the stage loop and the evaluation's `eval/figures/`.
"""

from __future__ import annotations

import numpy as np

from modeling_intrada.labels import LabelSpace, colorize

# Panels are drawn at least this tall (inches), so that titles and the legend stay readable on small images.
PANEL_HEIGHT = 2.2
MAX_LEGEND_COLUMNS = 7


def segmentation_figure(
    image: np.ndarray,
    prediction: np.ndarray,
    space: LabelSpace,
    label: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
    title: str | None = None,
) -> np.ndarray:
    """The panels side by side, titled, with a legend of the classes present and the entropy's colour bar.

    Args:
        image: The input image, `(height, width, 3)` uint8.
        prediction: The predicted train ids, `(height, width)`.
        space: The label space: class names and palette (the Cityscapes colours for Cityscapes classes).
        label: The ground-truth train ids (ignore index shown black), when the image is labelled.
        entropy: The normalised entropy map in [0, 1] (`method.losses.entropy_map`), when wanted.
        title: A title above the panels.

    Returns:
        The figure as an RGB `(H, W, 3)` uint8 array.
    """
    import matplotlib.pyplot as plt

    figure = build_segmentation_figure(image, prediction, space, label, entropy, title)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(figure)
    return pixels


def build_segmentation_figure(
    image: np.ndarray,
    prediction: np.ndarray,
    space: LabelSpace,
    label: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
    title: str | None = None,
):
    """The matplotlib `Figure` that `segmentation_figure` draws (same arguments); the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels: list[tuple[str, np.ndarray, dict]] = [("Image", image, {})]
    panels.append(("Prediction", colorize(prediction, space), {}))
    if label is not None:
        panels.append(("Ground truth", colorize(label, space), {}))
    if entropy is not None:
        panels.append(
            ("Entropy (normalised)", np.asarray(entropy), {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0})
        )
    height, width = np.asarray(prediction).shape
    panel_width = PANEL_HEIGHT * width / height
    present = np.unique(np.asarray(prediction))
    if label is not None:
        present = np.union1d(present, np.unique(np.asarray(label)))
    present = [int(i) for i in present if 0 <= i < space.num_classes]
    legend_rows = -(-len(present) // MAX_LEGEND_COLUMNS)
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(panel_width * len(panels) + 1.0, 6.0), PANEL_HEIGHT + 0.9 + 0.3 * legend_rows),
        squeeze=False,
    )
    for axis, (name, data, options) in zip(axes[0], panels, strict=True):
        shown = axis.imshow(data, **options)
        axis.set_title(name, fontsize=9)
        axis.axis("off")
        if options:
            bar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    handles = [Patch(color=np.asarray(space.palette[i]) / 255, label=space.class_names[i]) for i in present]
    if handles:
        figure.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), MAX_LEGEND_COLUMNS),
            fontsize=8,
            frameon=False,
        )
    figure.tight_layout(rect=(0, 0.12 + 0.05 * legend_rows, 1, 1))
    return figure
