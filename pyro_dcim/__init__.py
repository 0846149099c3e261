"""pyro_dcim: deep sigmoid networks as deep conditional independent models (Flach et al.)."""

from . import inference
from .checkpoint import load_model
from .model import DCIM, ForwardMeanField, ReverseMeanField
from .objectives import ObjectiveParts, bidirectional_loss, discriminative_loss, sampled_layer_loss
from .pyro_models import forward_model, mean_field_guide, reverse_mean_field_guide, reverse_model
from .spec import PAPER_SPECS, SpecError, parse_spec

__version__ = "0.1.0"

__all__ = [
    "DCIM", "ForwardMeanField", "ReverseMeanField", "ObjectiveParts",
    "discriminative_loss", "bidirectional_loss", "sampled_layer_loss",
    "forward_model", "reverse_model", "mean_field_guide", "reverse_mean_field_guide",
    "PAPER_SPECS", "SpecError", "parse_spec", "load_model", "inference", "__version__",
]
