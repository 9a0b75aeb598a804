"""Configuration of the feature-level discriminator of the digits experiments (SPEC section 8)."""

from __future__ import annotations

from transformers import PreTrainedConfig


class FeatureDiscriminatorConfig(PreTrainedConfig):
    r"""
    Configuration of [`FeatureDiscriminator`], the feature-level discriminator of ADDA/CyCADA (SPEC 8):
    fc `input_size` -> `hidden_size` -> `hidden_size` -> 1 with ReLU in between, no sigmoid (the loss is
    BCE with logits; 0 = source or easy, 1 = target or hard).

    Args:
        input_size (`int`, *optional*, defaults to 500):
            Size of the vectors it judges: the classifier's features (500 for lenet, 512 for dtn), or the
            number of classes when it sees the classifier's output (frameworks `advent` / `adaptsegnet`).
        hidden_size (`int`, *optional*, defaults to 500):
            Width of the two hidden layers.

    Example:

    ```python
    >>> from modeling_intrada import FeatureDiscriminator, FeatureDiscriminatorConfig
    >>> discriminator = FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=500))
    ```
    """

    model_type = "intrada_feature_discriminator"

    input_size: int = 500
    hidden_size: int = 500

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if int(self.input_size) < 1 or int(self.hidden_size) < 1:
            raise ValueError(
                f"input_size and hidden_size must be positive, got {self.input_size} and {self.hidden_size}."
            )
