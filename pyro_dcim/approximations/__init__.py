"""Approximations of the layer marginals that the mean-field passes propagate.

Every approximation is a function of one signature,

    fn(net, start, *, direction, layer, upto) -> Pass(hidden, preactivations, logits)

``start`` is the observed state in the unit encoding (``state(x^0)`` forward with
``layer = 0``; a class one-hot or a hidden state at ``layer`` in reverse).  ``hidden``
are the means ``E[x^k]`` in the chain's order, ``preactivations`` the *effective*
pre-activations ``a`` with ``units.mean(a) = E[x^k]`` (so ``units.bit_logits(a)`` are
the marginals' Bernoulli logits, whatever the approximation), and ``logits`` the class
logits (forward; ``softmax(logits)`` is the class posterior) or the image's bit logits
(reverse).  :data:`APPROXIMATIONS` maps the option name to the function:

* ``"first-order"`` — eq. (2), (14)-(15): ``μ^k = mean(W^k μ^{k-1} + b^k)`` (:mod:`.passes`);
* ``"ap2"`` — mean and variance of every unit (Shekhovtsov & Flach 2019), see :func:`ap2`;
* ``"variational"`` — Saul, Jaakkola & Jordan's (1996) mean field, fitted by fixed-point
  iterations (:mod:`.variational`, which also gives its lower bound).

Nothing here imports :mod:`pyro_dcim.inference`: the model's passes sit below the estimators.
"""

from __future__ import annotations

from typing import Callable

from .passes import (
    PROBIT_CONSTANT,
    Pass,
    ap2,
    first_order,
    preactivation_variance,
    probit_logit,
    softmax_expectation_logits,
    squared_map,
    unit_variance,
)
from .variational import VariationalFit, fit_mean_field, variational_pass, variational_posterior

__all__ = ["Pass", "APPROXIMATIONS", "get_approximation", "check_approximation", "first_order", "ap2",
           "variational_pass", "variational_posterior", "fit_mean_field", "VariationalFit",
           "squared_map", "preactivation_variance", "unit_variance", "probit_logit", "softmax_expectation_logits",
           "PROBIT_CONSTANT"]

APPROXIMATIONS: dict[str, Callable[..., Pass]] = {"first-order": first_order, "ap2": ap2,
                                                  "variational": variational_pass}


def check_approximation(name: str) -> str:
    if name not in APPROXIMATIONS:
        raise ValueError(f"unknown approximation {name!r}; choose one of {', '.join(APPROXIMATIONS)}")
    return name


def get_approximation(name: str) -> Callable[..., Pass]:
    """The pass for ``"first-order" | "ap2" | "variational"``."""
    return APPROXIMATIONS[check_approximation(name)]
