"""The DCIM as Pyro models, and the mean-field guides.

Site names are stable: hidden layers ``"x1" … "x{n-1}"`` (``Bernoulli`` over bits,
``to_event`` over the layer's shape), the class ``"class"`` (``Categorical``) and
the image ``"x0"`` (``Bernoulli``), all inside the batch plate ``"data"`` at
``dim=-1``.  The semi-supervised joint :func:`generative_model` observes the class where a
row has a label and leaves it latent where it has ``UNLABELLED`` (Pyro's ``obs_mask``: sites
``"class_observed"``, ``"class_unobserved"`` and the deterministic ``"class"``).  Any plate
placed outside (e.g. a particle plate at ``dim=-2``) vectorises every site, since the tied
layers accept leading batch dimensions.

Images are Bernoulli observations; intensities in [0, 1] are soft targets, so the
``"x0"`` site's ``log_prob`` is the negative binary cross-entropy (the exact
log-likelihood for binary images).

A layer site enumerates its ``2^m`` joint states (up to :data:`ENUMERATE_MAX_UNITS`
units), so ``config_enumerate`` + ``TraceEnum_ELBO`` sum out the hidden layers of a
narrow net exactly.  ``infer_discrete`` does not work: it needs scalar sites.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from .units import all_bit_states, log1p_exp
from .validation import UNLABELLED, check_images, check_labels, check_partial_labels

if TYPE_CHECKING:     # model.py builds on this module (DCIM inherits PyroModels): no runtime import back
    from .model import DCIM

__all__ = ["forward_model", "reverse_model", "mean_field_guide", "reverse_mean_field_guide", "generative_model",
           "forward_chain_guide", "hidden_site", "PLATE_NAME", "PyroModels"]

PLATE_NAME = "data"


def hidden_site(k: int) -> str:
    """Name of the sample site of hidden layer ``x^k``."""
    return f"x{k}"


class _Bernoulli(dist.Bernoulli):
    """``Bernoulli`` tuned for wide layers sampled under a particle plate.

    Same distribution, fewer passes over memory: draws are ``u < p`` written into the
    uniforms in place (about twice as fast as ``torch.bernoulli`` on CPU), and
    ``log_prob(x) = x·a − log(1 + e^a)`` takes the log-normaliser of the logits as they were
    before a plate expanded them, so a per-image distribution scored on ``S``
    particles pays for it once, not ``S`` times.
    """

    def sample(self, sample_shape: tuple = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            return torch.rand(shape, dtype=self.probs.dtype, device=self.probs.device).lt_(self.probs)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        # exact for soft targets too: it is minus the binary cross-entropy
        return value * self.logits - log1p_exp(self._unexpanded_logits())

    def _unexpanded_logits(self) -> torch.Tensor:
        return self.__dict__.get("_base_logits", self.logits)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance or self._get_checked_instance(_Bernoulli, _instance))
        new._base_logits = self._unexpanded_logits()
        return new


#: Widest layer whose joint states :class:`_Layer` enumerates (2^16 states).
ENUMERATE_MAX_UNITS = 16


class _Layer(dist.Independent):
    """A layer of Bernoulli units as one site, enumerable over its ``2^m`` joint states.

    So ``config_enumerate`` marks the hidden sites, and ``TraceEnum_ELBO`` sums out whole
    layers of a narrow net exactly (``infer_discrete`` cannot: it needs sites without event dims).
    """

    @property
    def has_enumerate_support(self) -> bool:
        return True

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        shape = self.event_shape
        m = shape.numel()
        if m > ENUMERATE_MAX_UNITS:
            raise ValueError(f"cannot enumerate a layer of {m} units (shape {tuple(shape)}, 2^{m} states; "
                             f"the limit is {ENUMERATE_MAX_UNITS} units): use sampling or the guides instead")
        bits = all_bit_states(m, self.base_dist.logits).reshape((1 << m,) + (1,) * len(self.batch_shape) + shape)
        return bits.expand((1 << m,) + self.batch_shape + shape) if expand else bits


def _bernoulli(logits: torch.Tensor, event_dims: int, soft: bool = False) -> dist.TorchDistribution:
    # Soft targets are outside Bernoulli's support; the cross-entropy is still the right log-prob.
    d = _Bernoulli(logits=logits, validate_args=False if soft else None)
    return _Layer(d, event_dims)


def _batch_size(x: torch.Tensor, event_dims: int) -> int:
    return x.shape[-event_dims - 1] if x.dim() > event_dims else 1


def forward_model(net: DCIM, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                  name: str = "dcim") -> torch.Tensor:
    """``p(x^1 … x^n | x^0) = Π_k p(x^k | x^{k-1})`` (eq. 13), a sigmoid belief net.

    ``x0``: ``(batch, *input_shape)`` in [0, 1]; ``y``: observed class indices or
    ``None``.  Returns the class (sampled or observed).
    """
    pyro.module(name, net)
    check_images(x0, net.input_shape, dtype=net.input_bias.dtype)
    if y is not None:
        check_labels(y, net.num_classes)
    units, n = net.units, net.num_layers
    with pyro.plate(PLATE_NAME, _batch_size(x0, len(net.input_shape)), dim=-1):
        h = units.state(x0)
        for k in range(1, n):
            bits = pyro.sample(hidden_site(k), _bernoulli(net.conditional_logits(k, h), len(net.shapes[k])))
            h = units.state(bits)
        return pyro.sample("class", dist.Categorical(logits=net.conditional_logits(n, h)), obs=y)


def reverse_model(net: DCIM, y: torch.Tensor, x0: Optional[torch.Tensor] = None, *,
                  name: str = "dcim") -> torch.Tensor:
    """``p(x^{n-1} … x^0 | x^n) = Π_k p(x^{k-1} | x^k)`` (eq. 17-18), tied by ``W^kᵀ``.

    ``y``: class indices ``(batch,)`` or probabilities ``(batch, classes)`` (the
    class is given, not a site); ``x0``: observed image or ``None`` to generate.
    Returns the image (sampled bits, or the observation).
    """
    pyro.module(name, net)
    if x0 is not None:
        check_images(x0, net.input_shape, dtype=net.input_bias.dtype)
    h = net.class_state(y)
    with pyro.plate(PLATE_NAME, h.shape[-2] if h.dim() > 1 else 1, dim=-1):
        for k in range(net.num_layers - 1, 0, -1):
            logits = net.conditional_logits(k, h, "reverse")
            h = net.units.state(pyro.sample(hidden_site(k), _bernoulli(logits, len(net.shapes[k]))))
        logits = net.conditional_logits(0, h, "reverse")
        return pyro.sample("x0", _bernoulli(logits, len(net.input_shape), soft=x0 is not None), obs=x0)


def mean_field_guide(net: DCIM, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                     name: str = "dcim", approximation: str = "first-order") -> None:
    """Deterministic guide for :func:`forward_model`: ``q(x^k) = Π_i Bernoulli(μ^k_i)``.

    The marginals come from :meth:`DCIM.forward_mean_field`, so the guide and the
    DNN forward pass are one computation.  With ``y`` observed the class is not a
    latent site; with ``y=None`` it is, and the guide covers it with the mean-field
    class probabilities (eq. 15), so Pyro's ``Importance`` and ELBOs see every latent.
    ``approximation``: see :mod:`pyro_dcim.approximations`.
    """
    pyro.module(name, net)
    mf = net.forward_mean_field(x0, upto=None if y is None else net.num_layers - 1, approximation=approximation)
    with pyro.plate(PLATE_NAME, _batch_size(x0, len(net.input_shape)), dim=-1):
        for k, a in enumerate(mf.preactivations, start=1):
            pyro.sample(hidden_site(k), _bernoulli(net.units.bit_logits(a), len(net.shapes[k])))
        if y is None:
            pyro.sample("class", dist.Categorical(logits=mf.logits))


def reverse_mean_field_guide(net: DCIM, y: torch.Tensor, x0: Optional[torch.Tensor] = None, *,
                             name: str = "dcim", approximation: str = "first-order") -> None:
    """Deterministic guide for :func:`reverse_model`: ``q(x^k) = Π_i Bernoulli(ν^k_i)``.

    With ``x0=None`` the image is a latent site of the model, and the guide covers it
    with the mean-field image probabilities ``ν^0``.  ``approximation``: see :mod:`pyro_dcim.approximations`.
    """
    pyro.module(name, net)
    rmf = net.reverse_mean_field(y, approximation=approximation)
    with pyro.plate(PLATE_NAME, rmf.logits.shape[0], dim=-1):
        for j, a in enumerate(rmf.preactivations):
            k = net.num_layers - 1 - j
            pyro.sample(hidden_site(k), _bernoulli(net.units.bit_logits(a), len(net.shapes[k])))
        if x0 is None:
            pyro.sample("x0", _bernoulli(rmf.logits, len(net.input_shape)))


def _partial_labels(net: DCIM, x0: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
    """``y`` with ``UNLABELLED`` rows, or every row unlabelled when ``y`` is None."""
    batch = _batch_size(x0, len(net.input_shape))
    if y is None:
        return torch.full((batch,), UNLABELLED, dtype=torch.long, device=x0.device)
    check_partial_labels(y, net.num_classes, batch)
    return y


def generative_model(net: DCIM, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                     class_prior: Optional[torch.Tensor] = None, name: str = "dcim") -> torch.Tensor:
    """The joint ``p(x^n) p(x^{n-1} | x^n) … p(x^0 | x^1)``: the reverse chain under a class prior, image observed.

    ``y``: a class index per image, ``UNLABELLED`` (-1) where the image has none (``None``: no labels).
    The class site follows Pyro's ``obs_mask`` convention, so one batch holds both kinds of rows:
    ``"class_observed"`` scores the labelled rows, ``"class_unobserved"`` is latent for the others,
    and ``"class"`` (deterministic) holds both.  ``class_prior``: ``p(x^n)``, the net's own unless given
    (uniform, or learned: ``DCIM(class_prior="learned")``).
    Returns the class of every row.
    """
    pyro.module(name, net)
    check_images(x0, net.input_shape, dtype=net.input_bias.dtype)
    y = _partial_labels(net, x0, y)
    prior = net.class_prior_probs().to(x0) if class_prior is None else class_prior
    with pyro.plate(PLATE_NAME, len(y), dim=-1):
        label = pyro.sample("class", dist.Categorical(probs=prior), obs=y.clamp(min=0), obs_mask=y >= 0)
        h = net.class_state(label)
        for k in range(net.num_layers - 1, 0, -1):
            h = net.units.state(pyro.sample(hidden_site(k), _bernoulli(net.conditional_logits(k, h, "reverse"),
                                                                       len(net.shapes[k]))))
        pyro.sample("x0", _bernoulli(net.conditional_logits(0, h, "reverse"), len(net.input_shape), soft=True),
                    obs=x0)
        return label


def forward_chain_guide(net: DCIM, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                        name: str = "dcim") -> None:
    """The forward chain ``q(x^1 … x^{n-1}, x^n | x^0)`` (eq. 13) as the guide of :func:`generative_model`:
    every hidden layer drawn from its parent (the proposal of reweighted wake-sleep), and the class of
    the unlabelled rows (``"class_unobserved"``, masked to them as the model masks it) from
    ``p(x^n | x^{n-1})``."""
    pyro.module(name, net)
    y = _partial_labels(net, x0, y)
    with pyro.plate(PLATE_NAME, len(y), dim=-1):
        h = net.units.state(x0)
        for k in range(1, net.num_layers):
            h = net.units.state(pyro.sample(hidden_site(k), _bernoulli(net.conditional_logits(k, h),
                                                                       len(net.shapes[k]))))
        with poutine.mask(mask=y < 0):
            pyro.sample("class_unobserved", dist.Categorical(logits=net.conditional_logits(net.num_layers, h)))


class PyroModels:
    """The models and guides as methods of the net (``net.forward_model``), as Pyro's inference
    classes take them; :class:`~pyro_dcim.model.DCIM` inherits them."""

    def forward_model(self, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                      name: str = "dcim") -> torch.Tensor:
        return forward_model(self, x0, y, name=name)

    def reverse_model(self, y: torch.Tensor, x0: Optional[torch.Tensor] = None, *,
                      name: str = "dcim") -> torch.Tensor:
        return reverse_model(self, y, x0, name=name)

    def mean_field_guide(self, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                         name: str = "dcim", approximation: str = "first-order") -> None:
        mean_field_guide(self, x0, y, name=name, approximation=approximation)

    def reverse_mean_field_guide(self, y: torch.Tensor, x0: Optional[torch.Tensor] = None, *,
                                 name: str = "dcim", approximation: str = "first-order") -> None:
        reverse_mean_field_guide(self, y, x0, name=name, approximation=approximation)

    def generative_model(self, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                         class_prior: Optional[torch.Tensor] = None, name: str = "dcim") -> torch.Tensor:
        return generative_model(self, x0, y, class_prior=class_prior, name=name)

    def forward_chain_guide(self, x0: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                            name: str = "dcim") -> None:
        forward_chain_guide(self, x0, y, name=name)
