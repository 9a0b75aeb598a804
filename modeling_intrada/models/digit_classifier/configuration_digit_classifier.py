"""Configuration of the digit classifiers of the paper's digits experiments (SPEC section 8)."""

from __future__ import annotations

from transformers import PreTrainedConfig

# architecture -> (input channels, input side, feature size, conv dropouts, classifier dropout), as in
# CyCADA's `LeNet` and `DTNClassifier` (SPEC 8).
ARCHITECTURES = {
    "lenet": (1, 28, 500, (0.5,), 0.5),
    "dtn": (3, 32, 512, (0.1, 0.3, 0.5), 0.5),
}


class DigitClassifierConfig(PreTrainedConfig):
    r"""
    Configuration of [`DigitClassifier`], G_inter / G_intra of the digits experiments (paper section 4.3).

    Two architectures, as in CyCADA which the paper builds on:

    - `"lenet"` (MNIST <-> USPS): 28x28 grey input; conv 5x5 20 -> max-pool 2 -> ReLU -> conv 5x5 50 ->
      dropout -> max-pool 2 -> ReLU -> fc 500 (the **features**) -> ReLU -> dropout -> fc 10.
    - `"dtn"` (SVHN -> MNIST): 32x32 RGB input; three convs 5x5 stride 2 (64, 128, 256 channels), each
      followed by BatchNorm, dropout and ReLU -> fc 512 + BatchNorm (the **features**) -> ReLU -> dropout
      -> fc 10.

    Inputs are `pixel_values = (x / 255 - 0.5) / 0.5` in [-1, 1] at `image_size` x `image_size` with
    `num_channels` channels; how each dataset gets there (USPS 16x16 upsampled bilinearly, MNIST padded to
    RGB 32x32 for the DTN) is the training pipeline's job and documented in `docs/digits.md`.

    Args:
        architecture (`str`, *optional*, defaults to `"lenet"`):
            `"lenet"` or `"dtn"`.
        num_labels (`int`, *optional*, defaults to 10):
            Number of classes. Set `id2label` to name them.
        num_channels (`int`, *optional*):
            Input channels; defaults to the architecture's (1 for lenet, 3 for dtn).
        image_size (`int`, *optional*):
            Input height and width; defaults to the architecture's (28 for lenet, 32 for dtn). The first
            fc layer is sized for it (a 4x4 conv map at the defaults), so `forward` refuses other sizes.
        feature_size (`int`, *optional*):
            Size of the feature vector the feature-level discriminator sees; defaults to 500 (lenet) or
            512 (dtn).
        conv_dropout (`list[float]`, *optional*):
            Dropout probability after each dropout-carrying conv (lenet: one, dtn: three); defaults to the
            architecture's. The lenet uses channel dropout (`Dropout2d`), as the reference.
        classifier_dropout (`float`, *optional*):
            Dropout before the last fc; defaults to 0.5.

    Example:

    ```python
    >>> from modeling_intrada import DigitClassifier, DigitClassifierConfig
    >>> model = DigitClassifier(DigitClassifierConfig(architecture="lenet"))
    >>> output = model(pixel_values=torch.zeros(2, 1, 28, 28))
    >>> output.logits.shape, output.features.shape
    (torch.Size([2, 10]), torch.Size([2, 500]))
    ```
    """

    model_type = "intrada_digit_classifier"

    architecture: str = "lenet"
    num_channels: int | None = None
    image_size: int | None = None
    feature_size: int | None = None
    conv_dropout: list[float] | tuple[float, ...] | None = None
    classifier_dropout: float | None = None

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = 10
        super().__post_init__(**kwargs)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"Unknown architecture {self.architecture!r}: expected one of {sorted(ARCHITECTURES)}."
            )
        channels, side, features, conv_dropout, classifier_dropout = ARCHITECTURES[self.architecture]
        self.num_channels = int(self.num_channels if self.num_channels is not None else channels)
        self.image_size = int(self.image_size if self.image_size is not None else side)
        self.feature_size = int(self.feature_size if self.feature_size is not None else features)
        self.conv_dropout = [float(p) for p in (self.conv_dropout or conv_dropout)]
        if self.classifier_dropout is None:
            self.classifier_dropout = classifier_dropout
        if len(self.conv_dropout) != len(conv_dropout):
            raise ValueError(
                f"{self.architecture} has {len(conv_dropout)} conv dropout(s), got conv_dropout={self.conv_dropout}."
            )
        if not all(0.0 <= p < 1.0 for p in [*self.conv_dropout, float(self.classifier_dropout)]):
            raise ValueError("dropout probabilities must lie in [0, 1).")
        if min(self.num_channels, self.image_size, self.feature_size) < 1:
            raise ValueError(
                f"num_channels, image_size and feature_size must be positive, got {self.num_channels}, "
                f"{self.image_size} and {self.feature_size}."
            )
        if self.feature_map_size < 1:
            raise ValueError(f"image_size {self.image_size} is too small for the {self.architecture} convs.")

    @property
    def feature_map_size(self) -> int:
        """Side of the last conv map, which the fc layer flattens (4 for the default sizes)."""
        side = self.image_size
        if self.architecture == "lenet":  # two (conv 5x5 without padding, max-pool 2)
            return ((side - 4) // 2 - 4) // 2
        for _ in range(3):  # three convs 5x5, stride 2, padding 2
            side = (side - 1) // 2 + 1
        return side
