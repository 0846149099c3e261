"""The DCIM: one module of tied parameters serving the forward and the reverse chain.

Parameters (Section 2.3, eq. 19-21): weights ``W^1..W^n``, biases ``b^1..b^n``
shared by both directions, and ``b^0``, the input bias used only in reverse; ``p(x^n)`` is uniform
unless ``class_prior="learned"`` makes it a parameter (``class_prior_logits``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .approximations import get_approximation
from .layers import make_layer
from .pyro_models import PyroModels
from .spec import SpecLike, layer_shapes, parse_spec
from .units import get_units
from .validation import as_labels, check_direction, check_images, check_labels, check_state

__all__ = ["DCIM", "ForwardMeanField", "ReverseMeanField", "CLASS_PRIORS"]

#: ``p(x^n)`` of the reverse chain
CLASS_PRIORS = ("uniform", "learned")


@dataclass
class ForwardMeanField:
    """Result of :meth:`DCIM.forward_mean_field` (eq. 14-15).

    ``hidden``: ``[μ^1 … μ^{n-1}]``, means ``E[x^k]`` in the unit encoding, each
    ``(batch, *layer_shape)``; ``preactivations``: ``[a^1 … a^{n-1}]``;
    ``logits``: class logits ``(batch, classes)``.
    """

    hidden: list[torch.Tensor]
    preactivations: list[torch.Tensor]
    logits: torch.Tensor


@dataclass
class ReverseMeanField:
    """Result of :meth:`DCIM.reverse_mean_field` (eq. 17-18 under approximation 2).

    ``hidden``: ``[ν^{k-1} … ν^1]`` top-down (``k = n`` from a class), means in
    the unit encoding; ``preactivations`` likewise; ``logits``: Bernoulli logits
    of ``p(x^0 = 1)``, shaped like the input.
    """

    hidden: list[torch.Tensor]
    preactivations: list[torch.Tensor]
    logits: torch.Tensor


class DCIM(PyroModels, nn.Module):
    """A deep conditional independent model held as one tied sigmoid network.

    Build it from the paper's notation with :meth:`from_spec`.  Attribute
    ``layers[k-1]`` is ``W^k`` with its bias ``b^k``; ``input_bias`` is ``b^0``.
    The Pyro models and guides of :mod:`pyro_dcim.pyro_models` are its methods too (:class:`PyroModels`).
    """

    def __init__(self, spec: SpecLike, input_shape: Sequence[int], units: str = "01", tied: bool = True,
                 class_prior: str = "uniform") -> None:
        super().__init__()
        parsed = parse_spec(spec)
        self.units = get_units(units)
        self.spec = [layer.as_notation() for layer in parsed]
        self.shapes = layer_shapes(parsed, input_shape)
        self.input_shape = self.shapes[0]
        self.num_classes = self.shapes[-1][0]
        self.layers = nn.ModuleList(
            make_layer(layer, self.shapes[k], self.shapes[k + 1]) for k, layer in enumerate(parsed)
        )
        # b^0 is per pixel: the reverse model's image bias (an "average image" prior).
        self.input_bias = nn.Parameter(torch.zeros(self.input_shape))
        # p(x^n): fixed uniform (the paper), or learned as softmax(class_prior_logits) (a mixture's weights)
        if class_prior not in CLASS_PRIORS:
            raise ValueError(f"class_prior must be one of {', '.join(CLASS_PRIORS)}, got {class_prior!r}")
        logits = nn.Parameter(torch.zeros(self.num_classes)) if class_prior == "learned" else None
        self.register_parameter("class_prior_logits", logits)
        if not tied:
            self.untie()

    @classmethod
    def from_spec(cls, spec: SpecLike, input_shape: Sequence[int], units: str = "01", tied: bool = True,
                  class_prior: str = "uniform") -> "DCIM":
        """``DCIM.from_spec([(3, 1, 32), 50, 10], input_shape=(1, 28, 28), units="01")``."""
        return cls(spec, input_shape, units, tied, class_prior)

    @property
    def class_prior(self) -> str:
        """``"learned"`` when ``p(x^n)`` is a parameter of the net, else ``"uniform"``."""
        return "uniform" if self.class_prior_logits is None else "learned"

    def class_log_prior(self) -> torch.Tensor:
        """``log p(x^n)``, ``(classes,)``: uniform, or ``log_softmax`` of the learned logits (differentiable)."""
        if self.class_prior_logits is None:
            return self.input_bias.new_full((self.num_classes,), -math.log(self.num_classes))
        return torch.log_softmax(self.class_prior_logits, -1)

    def class_prior_probs(self) -> torch.Tensor:
        """``p(x^n)``, ``(classes,)``, detached: ``1/C`` each, or the softmax of the learned logits."""
        if self.class_prior_logits is None:
            return self.input_bias.new_full((self.num_classes,), 1.0 / self.num_classes)
        return torch.softmax(self.class_prior_logits.detach(), -1)

    @property
    def tied(self) -> bool:
        """Do both chains share ``W^k`` (eq. 19-20)?  ``False`` after :meth:`untie`."""
        return all(layer.tied for layer in self.layers)

    def untie(self) -> "DCIM":
        """The ``--untie`` ablation: the reverse chain gets its own ``W^k`` (the biases stay shared),
        initialised equal to the forward weights.  Every reverse conditional reads the copy."""
        for layer in self.layers:
            layer.untie()
        return self

    def sync_reverse_weights(self) -> None:
        """Set the reverse copies equal to the forward weights again (no-op when tied)."""
        for layer in self.layers:
            layer.sync_reverse_weight()

    @property
    def num_layers(self) -> int:
        """``n``: hidden layers plus the class layer."""
        return len(self.layers)

    @property
    def num_pixels(self) -> int:
        return int(torch.Size(self.input_shape).numel())

    def extra_repr(self) -> str:
        untied = "" if self.tied else ", tied=False"
        prior = "" if self.class_prior == "uniform" else ", class_prior='learned'"
        return f"spec={self.spec}, input_shape={self.input_shape}, units={self.units}{untied}{prior}"

    def bias(self, k: int) -> torch.Tensor:
        """``b^k``, for ``k = 0 .. n``."""
        return self.input_bias if k == 0 else self.layers[k - 1].bias

    # -- the per-layer conditionals of both chains: every pass, model and engine steps through these
    def preactivation(self, k: int, parent: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        """``a^k``, the pre-activation of ``x^k`` given its parent's state (or mean) in the unit encoding.

        Forward (eq. 6), parent ``x^{k-1}``, ``k = 1 .. n``: ``a^k = W^k x^{k-1} + b^k``.
        Reverse (eq. 18), parent ``x^{k+1}``, ``k = 0 .. n-1``: ``a^k = W^{k+1}ᵀ x^{k+1} + b^k``
        (the reverse copy of ``W^{k+1}`` when untied).  So the pre-activation of ``x^k``'s child
        ``c`` is ``preactivation(c, x^k, direction)``.  Shape ``(*batch, *shape_k)``.
        """
        if direction == "forward":
            return self.layers[k - 1](parent)
        check_direction(direction)
        return self.layers[k].adjoint(parent) + self.bias(k)

    def conditional_logits(self, k: int, parent: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        """Logits of ``p(x^k | parent)`` (indices as in :meth:`preactivation`): the Bernoulli logits of
        ``x^k_i = 1`` (eq. 6-9, 17-18), or the class logits of the categorical ``x^n`` (eq. 15)."""
        a = self.preactivation(k, parent, direction)
        return a if k == self.num_layers and direction == "forward" else self.units.bit_logits(a)

    def parent_layer(self, k: int, direction: str = "forward") -> nn.Module:
        """The tied layer from ``x^k``'s parent to ``x^k``: ``W^k`` forward, ``W^{k+1}`` reverse (as its adjoint)."""
        return self.layers[k - 1] if direction == "forward" else self.layers[k]

    # -- forward chain -------------------------------------------------------
    def forward_mean_field(self, x0: torch.Tensor, upto: Optional[int] = None,
                           approximation: str = "first-order") -> ForwardMeanField:
        """The DNN forward pass, eq. (14)-(15): ``μ^k = mean(W^k μ^{k-1} + b^k)``.

        ``x0``: ``(*batch, *input_shape)`` with values in [0, 1] read as ``p(x^0 = 1)``.
        ``upto=k`` stops after layer ``k``'s pre-activation (the class logits are
        then empty), which the sampled-layer objective uses.  ``approximation``:
        ``"first-order"`` (eq. 2), ``"ap2"`` or ``"variational"`` (:mod:`pyro_dcim.approximations`).
        """
        check_images(x0, self.input_shape, dtype=self.input_bias.dtype)
        p = get_approximation(approximation)(self, self.units.state(x0), direction="forward", layer=0, upto=upto)
        return ForwardMeanField(p.hidden, p.preactivations, p.logits)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Class logits of the forward mean-field pass (so the module is a classifier)."""
        return self.forward_mean_field(x0).logits

    # -- reverse chain -------------------------------------------------------
    def class_state(self, y: torch.Tensor) -> torch.Tensor:
        """``ν^n``: one-hot rows for class indices, or class probabilities as given."""
        y = as_labels(y, self.input_bias.device)
        if not y.is_floating_point():
            check_labels(y, self.num_classes)
            return F.one_hot(y.long(), self.num_classes).to(self.input_bias.dtype)
        if y.shape[-1] != self.num_classes:
            raise ValueError(f"class probabilities must have {self.num_classes} columns, got shape {tuple(y.shape)}")
        return y

    def reverse_mean_field(self, y: torch.Tensor, layer: Optional[int] = None,
                           approximation: str = "first-order") -> ReverseMeanField:
        """The tied reverse pass: ``ν^{k-1} = mean(W^kᵀ ν^k + b^{k-1})`` down to the image.

        ``y``: class indices ``(batch,)`` or class probabilities ``(batch, classes)``;
        with ``layer=k`` (``1 <= k < n``), a state or mean of hidden layer ``k``
        in the unit encoding, ``(batch, *shape_k)``.  Class indices are propagated
        once per class and gathered, since every image of a class shares its pass.
        ``approximation`` as in :meth:`forward_mean_field`.
        """
        get_approximation(approximation)
        n = self.num_layers
        if layer is None or layer == n:
            y = as_labels(y, self.input_bias.device)
            if y.dtype.is_floating_point:
                return self._reverse_from(self.class_state(y), n, approximation)
            if y.dim() == 0 or y.numel() == 0:
                return self._reverse_from(self.class_state(y), n, approximation)
            check_labels(y, self.num_classes)
            if y.dim() != 1:   # indexing the per-class pass with (batch, 1) would add a dimension silently
                raise ValueError(f"class indices must be shaped (batch,), got {tuple(y.shape)}; pass y.reshape(-1) "
                                 "(or class probabilities (batch, classes) as floats)")
            per_class = self.class_reverse_mean_field(approximation)
            return ReverseMeanField([h[y] for h in per_class.hidden], [a[y] for a in per_class.preactivations],
                                    per_class.logits[y])
        if not 1 <= layer < n:
            raise ValueError(f"layer must be a hidden layer 1..{n - 1} (or {n}, the class), got {layer}")
        check_state(y, self.shapes[layer], layer)
        return self._reverse_from(y, layer, approximation)

    def class_reverse_mean_field(self, approximation: str = "first-order") -> ReverseMeanField:
        """The reverse pass from every class at once: row ``c`` of each result is ``ν^k`` given
        ``x^n = c``, shared by every image of that class."""
        eye = torch.eye(self.num_classes, dtype=self.input_bias.dtype, device=self.input_bias.device)
        return self._reverse_from(eye, self.num_layers, approximation)

    def _reverse_from(self, h: torch.Tensor, k: int, approximation: str = "first-order") -> ReverseMeanField:
        p = get_approximation(approximation)(self, h, direction="reverse", layer=k)
        return ReverseMeanField(p.hidden, p.preactivations, p.logits)
