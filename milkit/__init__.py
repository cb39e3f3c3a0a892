"""milkit: plugin-based multiple-instance learning for computational pathology."""

from milkit.aggregator import Aggregator, AggregatorOutput, FeatureSpec
from milkit.cohort_format import CohortFormat
from milkit.config import ComponentConfig
from milkit.errors import MilkitError
from milkit.extractor import EncoderCard, Extractor
from milkit.head import Head, HeadOutput
from milkit.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "Aggregator",
    "AggregatorOutput",
    "CohortFormat",
    "EncoderCard",
    "FeatureSpec",
    "ComponentConfig",
    "Extractor",
    "Head",
    "HeadOutput",
    "MilkitError",
    "__version__",
    "hookimpl",
]
