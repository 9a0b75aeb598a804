"""Configuration of the fully convolutional discriminator of AdaptSegNet/AdvEnt/IntraDA (SPEC section 2)."""

from __future__ import annotations

from transformers import PreTrainedConfig


class FCDiscriminatorConfig(PreTrainedConfig):
    r"""
    Configuration of [`FCDiscriminator`]: five 4x4 stride-2 convs, C -> ndf -> 2 ndf -> 4 ndf -> 8 ndf -> 1,
    LeakyReLU after the first four, no normalisation, no sigmoid (the loss is BCE with logits).

    Args:
        num_channels (`int`, *optional*, defaults to 19):
            Channels of the input map: the number of classes for AdvEnt (weighted self-information) and
            AdaptSegNet (softmax).
        ndf (`int`, *optional*, defaults to 64):
            Channels of the first conv; each following conv doubles them.
        negative_slope (`float`, *optional*, defaults to 0.2):
            Slope of the LeakyReLU.

    Example:

    ```python
    >>> from modeling_intrada import FCDiscriminator, FCDiscriminatorConfig
    >>> discriminator = FCDiscriminator(FCDiscriminatorConfig(num_channels=19))
    ```
    """

    model_type = "intrada_fc_discriminator"

    num_channels: int = 19
    ndf: int = 64
    negative_slope: float = 0.2

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if int(self.num_channels) < 1 or int(self.ndf) < 1:
            raise ValueError(
                f"num_channels and ndf must be positive, got {self.num_channels} and {self.ndf}."
            )
