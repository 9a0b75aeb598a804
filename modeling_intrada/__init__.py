"""IntraDA for the Hugging Face ecosystem: models, image processor, losses, ranking and metrics.

Importing the package registers the models with the Auto classes::

    import modeling_intrada  # noqa: F401
    from transformers import AutoModelForSemanticSegmentation
    model = AutoModelForSemanticSegmentation.from_pretrained("path/or/hub-id")

Saved folders also carry the modeling code (`auto_map`), so `trust_remote_code=True` loads them in an
interpreter that never imported this package.

Layout (docs/architecture.md): `models/` one folder per model, `data/` datasets and their building,
`method/` the paper's losses, frameworks and ranking, `evaluation/` the metric and the evaluator,
`publishing/` cards and the Hub, `training/` the arguments, the stage loop and the pipeline. Imports go in
that order.
"""

import logging

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    AutoVideoProcessor,
)

from modeling_intrada.models.deeplabv2.configuration_deeplabv2 import DeepLabV2Config
from modeling_intrada.models.deeplabv2.image_processing_deeplabv2 import DeepLabV2ImageProcessor
from modeling_intrada.models.deeplabv2.modeling_deeplabv2 import (
    DeepLabV2ForSemanticSegmentation,
    DeepLabV2SegmenterOutput,
    logits_size,
)
from modeling_intrada.models.digit_classifier.configuration_digit_classifier import DigitClassifierConfig
from modeling_intrada.models.digit_classifier.modeling_digit_classifier import (
    DigitClassifier,
    DigitClassifierOutput,
)
from modeling_intrada.models.fc_discriminator.configuration_fc_discriminator import FCDiscriminatorConfig
from modeling_intrada.models.fc_discriminator.modeling_fc_discriminator import FCDiscriminator
from modeling_intrada.models.feature_discriminator.configuration_feature_discriminator import (
    FeatureDiscriminatorConfig,
)
from modeling_intrada.models.feature_discriminator.modeling_feature_discriminator import FeatureDiscriminator

__version__ = "0.1.0"

# The segmenter (G) and its entropy-map discriminator (SPEC sections 1-2).
AutoConfig.register(DeepLabV2Config.model_type, DeepLabV2Config, exist_ok=True)
AutoConfig.register(FCDiscriminatorConfig.model_type, FCDiscriminatorConfig, exist_ok=True)
AutoModel.register(DeepLabV2Config, DeepLabV2ForSemanticSegmentation, exist_ok=True)
AutoModelForSemanticSegmentation.register(DeepLabV2Config, DeepLabV2ForSemanticSegmentation, exist_ok=True)
AutoModel.register(FCDiscriminatorConfig, FCDiscriminator, exist_ok=True)
# One processor (NumPy and PIL) answers both backends, so AutoImageProcessor's default request for
# "torchvision" does not log a fallback.
AutoImageProcessor.register(
    DeepLabV2Config,
    image_processor_classes={"pil": DeepLabV2ImageProcessor, "torchvision": DeepLabV2ImageProcessor},
    exist_ok=True,
)
# No video processor: every pipeline probes AutoVideoProcessor, which otherwise guesses a remote
# `DeepLabV2VideoProcessor` from the image processor's auto_map and asks the [y/N] trust_remote_code question.
AutoVideoProcessor.register(DeepLabV2Config, video_processor_classes={}, exist_ok=True)
# The digits experiments (paper section 4.3): the classifier G and its feature-level discriminator.
AutoConfig.register(DigitClassifierConfig.model_type, DigitClassifierConfig, exist_ok=True)
AutoConfig.register(FeatureDiscriminatorConfig.model_type, FeatureDiscriminatorConfig, exist_ok=True)
AutoModel.register(DigitClassifierConfig, DigitClassifier, exist_ok=True)
AutoModelForImageClassification.register(DigitClassifierConfig, DigitClassifier, exist_ok=True)
AutoModel.register(FeatureDiscriminatorConfig, FeatureDiscriminator, exist_ok=True)

# Saved folders get the code and an `auto_map`, for `trust_remote_code=True` without this package.
DeepLabV2Config.register_for_auto_class()
DeepLabV2ForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
DeepLabV2ImageProcessor.register_for_auto_class("AutoImageProcessor")
FCDiscriminatorConfig.register_for_auto_class()
FCDiscriminator.register_for_auto_class("AutoModel")
DigitClassifierConfig.register_for_auto_class()
DigitClassifier.register_for_auto_class("AutoModelForImageClassification")
FeatureDiscriminatorConfig.register_for_auto_class()
FeatureDiscriminator.register_for_auto_class("AutoModel")


class _RegisteredModelsAreSupported(logging.Filter):
    """Drop the pipelines' "The model '...' is not supported" error for the models registered here.

    `Pipeline.check_model_type` compares the model against transformers' built-in name tables only, not the
    classes registered with the Auto classes, although the pipeline loads and runs them.
    """

    names = (DeepLabV2ForSemanticSegmentation.__name__, DigitClassifier.__name__)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(f"The model '{name}' is not supported") for name in self.names)


_pipelines_logger = logging.getLogger("transformers.pipelines.base")
if not any(isinstance(f, _RegisteredModelsAreSupported) for f in _pipelines_logger.filters):
    _pipelines_logger.addFilter(_RegisteredModelsAreSupported())

__all__ = [
    "DeepLabV2Config",
    "DeepLabV2ForSemanticSegmentation",
    "DeepLabV2ImageProcessor",
    "DeepLabV2SegmenterOutput",
    "DigitClassifier",
    "DigitClassifierConfig",
    "DigitClassifierOutput",
    "FCDiscriminator",
    "FCDiscriminatorConfig",
    "FeatureDiscriminator",
    "FeatureDiscriminatorConfig",
    "logits_size",
]
