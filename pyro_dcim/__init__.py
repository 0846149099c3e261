"""pyro_dcim: deep sigmoid networks as deep conditional independent models (Flach et al.).

The names below load on first use (PEP 562), so ``python -m pyro_dcim.fit`` can set up its
Ctrl-C handling before torch and Pyro are imported; ``from pyro_dcim import DCIM`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "DCIM": ".model", "ForwardMeanField": ".model", "ReverseMeanField": ".model",
    "ObjectiveParts": ".objectives", "discriminative_loss": ".objectives", "bidirectional_loss": ".objectives",
    "sampled_layer_loss": ".objectives",
    "forward_model": ".pyro_models", "reverse_model": ".pyro_models", "mean_field_guide": ".pyro_models",
    "reverse_mean_field_guide": ".pyro_models",
    "PAPER_SPECS": ".spec", "SpecError": ".spec", "parse_spec": ".spec",
    "load_model": ".training.checkpoint",
}

__all__ = [*_EXPORTS, "inference", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name == "inference":
        value = importlib.import_module(".inference", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from . import inference  # noqa: F401
    from .model import DCIM, ForwardMeanField, ReverseMeanField  # noqa: F401
    from .objectives import ObjectiveParts, bidirectional_loss, discriminative_loss, sampled_layer_loss  # noqa: F401
    from .pyro_models import forward_model, mean_field_guide, reverse_mean_field_guide, reverse_model  # noqa: F401
    from .spec import PAPER_SPECS, SpecError, parse_spec  # noqa: F401
    from .training.checkpoint import load_model  # noqa: F401
